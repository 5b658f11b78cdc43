"""Numeric knobs of a surface file: find them and rewrite their values in place.

A knob is a named number a tuner may change without understanding the code around it: an
UPPER_CASE module-level constant in Python (a literal, a constant expression such as
`2**19`, or each number of a short tuple such as `ADAM_BETAS = (0.9, 0.95)`, named
`ADAM_BETAS[0]`, `ADAM_BETAS[1]`), or a numeric leaf of a TOML, JSON or YAML config. A
rewrite replaces only the value token, so comments, layout and every other byte stay as
they were. Each knob carries the comment on its own line, where a user may declare how it is
searched (`# tune: 16..1024 pow2`, read by `spec.py`).
"""

from __future__ import annotations

import ast
import contextlib
import io
import json
import math
import operator
import re
import tokenize
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any, Literal

Number = int | float
Kind = Literal["int", "float"]


@dataclass
class Knob:
    """One numeric knob; `start:end` is the span of its value token in the content."""

    name: str
    path: str
    value: Number
    kind: Kind
    start: int = 0
    end: int = 0
    text: str = ""
    comment: str = ""  # the comment on the knob's line, without the '#'


def _is_number(value: Any) -> bool:
    # bool is an int subclass, but a flag is a switch, not something to tune on a scale.
    return type(value) in (int, float) and math.isfinite(value)


def round_value(value: Number, kind: Kind) -> Number:
    """The value as it will be written: ints exact, floats to 3 significant digits."""
    if not math.isfinite(value):
        raise ValueError(f"knob values must be finite, got {value!r}")
    if kind == "int":
        return int(round(value))
    return float(f"{float(value):.3g}")


_POWER = re.compile(r"(?P<base>\d+)(?P<op>\s*\*\*\s*)(?P<exp>\d+)\Z")


def format_value(value: Number, kind: Kind, style: str = "python", like: str = "") -> str:
    """Source text for a value: `64`, `0.031`, `2.0`, `3e-05` (`3.0e-05` in YAML).

    A float knob always stays a float literal. YAML 1.1 readers such as PyYAML read `3e-05`
    as a string, so there the mantissa gets a decimal point. An int written as a power
    (`like` = `2**19`) stays a power of the same base when the new value is one (`2**20`).
    """
    if kind == "int":
        power = _POWER.match(like.strip()) if style == "py" else None
        if power and int(power["base"]) > 1 and int(value) > 0:
            base, exp = int(power["base"]), round(math.log(int(value), int(power["base"])))
            if base**exp == int(value):
                return f"{base}{power['op']}{exp}"
        return str(int(value))
    text = repr(float(value))
    if style == "yaml" and "e" in text:
        mantissa, exponent = text.split("e")
        if "." not in mantissa:
            mantissa += ".0"
        text = f"{mantissa}e{exponent}"
    return text


def _style(path: str) -> str:
    suffix = PurePosixPath(path).suffix.lower()
    return "yaml" if suffix in (".yaml", ".yml") else suffix.lstrip(".")


def find_knobs(path: str, content: str) -> list[Knob]:
    """The knobs of one file, in file order; a name assigned twice counts once (the last
    assignment, the one that takes effect). Unparseable or unknown files have none."""
    finder = _FINDERS.get(_style(path))
    if finder is None:
        return []
    try:
        hits = list(finder(content))
    except (SyntaxError, ValueError, RecursionError, IndexError, AttributeError):
        return []
    by_name: dict[str, Knob] = {}
    for name, value, start, end, comment in hits:
        if not name or not _is_number(value):
            continue
        kind: Kind = "float" if isinstance(value, float) else "int"
        by_name.pop(name, None)
        by_name[name] = Knob(
            name, path, value, kind, start, end, content[start:end], comment.strip()
        )
    return sorted(by_name.values(), key=lambda k: k.start)


def apply_values(path: str, content: str, values: dict[str, Number]) -> str:
    """`content` with the named knobs set to `values`; every other byte is unchanged.

    A value equal to the knob's current one keeps its original spelling (`1e-3` stays).
    Raises KeyError for a name that is not a knob of this file.
    """
    knobs = {k.name: k for k in find_knobs(path, content)}
    unknown = sorted(set(values) - set(knobs))
    if unknown:
        raise KeyError(f"{path}: no numeric knob named {', '.join(unknown)}")
    style = _style(path)
    edits: list[tuple[int, int, str]] = []
    for name, value in values.items():
        knob = knobs[name]
        new = round_value(value, knob.kind)
        if new != knob.value:
            edits.append((knob.start, knob.end, format_value(new, knob.kind, style, knob.text)))
    for start, end, text in sorted(edits, reverse=True):
        content = content[:start] + text + content[end:]
    return content


Hit = tuple[str, Any, int, int, str]  # name, value, start, end, comment on its line


def _comment_after(content: str, end: int) -> str:
    """The `#` comment that ends the line on which offset `end` lies (TOML, YAML)."""
    stop = content.find("\n", end)
    rest = content[end : len(content) if stop < 0 else stop]
    match = re.search(r"#(.*)", rest)
    return match.group(1).rstrip("\r") if match else ""


def _lines(content: str) -> Iterator[tuple[int, str]]:
    """(offset, line without its newline) for every line."""
    offset = 0
    for raw in content.split("\n"):
        yield offset, raw.rstrip("\r")
        offset += len(raw) + 1


# --- Python -------------------------------------------------------------------------------

_CONSTANT = re.compile(r"_*[A-Z][A-Z0-9_]*\Z")


_OPS = {
    ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul,
    ast.Div: operator.truediv, ast.FloorDiv: operator.floordiv, ast.Pow: operator.pow,
}
MAX_TUPLE = 8  # a longer sequence of numbers is data, not settings


def _literal_number(node: ast.expr) -> Any:
    """The value of a number literal or of constant arithmetic on literals (`2**19`,
    `8 * 1024`, `-3e-4`); None for anything else."""
    if isinstance(node, ast.Constant):
        return node.value if type(node.value) in (int, float) else None
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub | ast.UAdd):
        inner = _literal_number(node.operand)
        if inner is None:
            return None
        return -inner if isinstance(node.op, ast.USub) else inner
    if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
        left, right = _literal_number(node.left), _literal_number(node.right)
        if left is None or right is None:
            return None
        if isinstance(node.op, ast.Pow) and (abs(right) > 64 or abs(left) > 1e6):
            return None  # a constant that is not a setting, and costly to compute
        try:
            value = _OPS[type(node.op)](left, right)
        except (ArithmeticError, ValueError):
            return None
        return value if type(value) in (int, float) and math.isfinite(value) else None
    return None


def _python(content: str) -> Iterator[Hit]:
    tree = ast.parse(content)
    # ast positions are (line, UTF-8 byte column); the tokenizer ends lines at \r\n, \r or \n.
    starts = [0] + [m.end() for m in re.finditer(r"\r\n|\r|\n", content)]
    comments: dict[int, str] = {}
    with contextlib.suppress(tokenize.TokenError, SyntaxError):
        for token in tokenize.generate_tokens(io.StringIO(content).readline):
            if token.type == tokenize.COMMENT:
                comments[token.start[0]] = token.string[1:]

    def char(line: int, byte_col: int) -> int:
        begin = starts[line - 1]
        end = starts[line] if line < len(starts) else len(content)
        return begin + len(content[begin:end].encode()[:byte_col].decode())

    def hit(name: str, node: ast.expr, fallback: str = "") -> Hit | None:
        number = _literal_number(node)
        if number is None or node.end_lineno is None or node.end_col_offset is None:
            return None
        comment = comments.get(node.end_lineno, fallback)
        start = char(node.lineno, node.col_offset)
        return name, number, start, char(node.end_lineno, node.end_col_offset), comment

    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1:
            target, value = node.targets[0], node.value
        elif isinstance(node, ast.AnnAssign) and node.value is not None:
            target, value = node.target, node.value
        else:
            continue
        if not isinstance(target, ast.Name) or not _CONSTANT.match(target.id):
            continue
        if isinstance(value, ast.Tuple | ast.List):
            if not 0 < len(value.elts) <= MAX_TUPLE:
                continue
            own = comments.get(value.end_lineno or 0, "")
            found = [hit(f"{target.id}[{i}]", e, own) for i, e in enumerate(value.elts)]
            if all(found):  # a tuple of numbers only, e.g. ADAM_BETAS = (0.9, 0.95)
                yield from (h for h in found if h)
            continue
        found_one = hit(target.id, value)
        if found_one:
            yield found_one


# --- TOML ---------------------------------------------------------------------------------

_TOML_KEY_PART = r'(?:[A-Za-z0-9_-]+|"(?:[^"\\]|\\.)*"|\'[^\']*\')'
_TOML_KEY = rf"{_TOML_KEY_PART}(?:[ \t]*\.[ \t]*{_TOML_KEY_PART})*"
_TOML_ASSIGN = re.compile(rf"[ \t]*(?P<key>{_TOML_KEY})[ \t]*=[ \t]*")
_TOML_HEADER = re.compile(rf"[ \t]*(?P<open>\[\[?)[ \t]*(?P<key>{_TOML_KEY})[ \t]*\]")
_TOML_NUMBER = re.compile(
    r"[+-]?\d[\d_]*(?:\.\d[\d_]*)?(?:[eE][+-]?\d[\d_]*)?(?=[ \t]*(?:#|$))"
)


def _toml_key(text: str) -> list[str]:
    parts = re.findall(_TOML_KEY_PART, text)
    return [json.loads(p) if p.startswith('"') else p.strip("'") for p in parts]


def _lookup(data: Any, keys: list[str]) -> Any:
    for key in keys:
        if not isinstance(data, dict) or key not in data:
            return None
        data = data[key]
    return data


def _toml(content: str) -> Iterator[Hit]:
    data = tomllib.loads(content)
    table: list[str] = []
    in_array_table = False  # entries of [[x]] have no unique dotted name
    open_string: str | None = None
    for offset, line in _lines(content):
        if open_string is not None:
            if line.count(open_string) % 2 == 1:
                open_string = None
            continue
        header = _TOML_HEADER.match(line)
        if header:
            table, in_array_table = _toml_key(header["key"]), header["open"] == "[["
            continue
        assign = _TOML_ASSIGN.match(line)
        if not assign:
            continue
        rest = line[assign.end() :]
        for quote in ('"""', "'''"):
            if rest.startswith(quote) and rest.count(quote) % 2 == 1:
                open_string = quote
        number = _TOML_NUMBER.match(line, assign.end())
        if not number or in_array_table:
            continue
        keys = table + _toml_key(assign["key"])
        value = _lookup(data, keys)
        # The line scan is only trusted where the real parser agrees with it.
        if _is_number(value) and value == tomllib.loads(f"v = {number.group()}")["v"]:
            end = offset + number.end()
            yield ".".join(keys), value, offset + number.start(), end, _comment_after(content, end)


# --- JSON ---------------------------------------------------------------------------------

_JSON_WS = re.compile(r"[ \t\n\r]*")
_JSON_STRING = re.compile(r'"(?:[^"\\]|\\.)*"', re.S)
_JSON_NUMBER = re.compile(r"-?(?:0|[1-9]\d*)(?:\.\d+)?(?:[eE][+-]?\d+)?")
_JSON_OTHER = re.compile(r"true|false|null|NaN|-?Infinity")


def _json(content: str) -> Iterator[Hit]:
    json.loads(content)  # the scanner below trusts the structure, so reject bad JSON first
    hits: list[Hit] = []
    _json_value(content, _JSON_WS.match(content, 0).end(), [], hits)
    yield from hits


def _json_value(text: str, i: int, keys: list[str] | None, hits: list[Hit]) -> int:
    """Scan the value at `i`, return the index after it. `keys` is None inside arrays:
    their numbers are data (often long series), not named settings."""

    def ws(j: int) -> int:
        return _JSON_WS.match(text, j).end()

    if text[i] in "{[":
        closing, i = ("}" if text[i] == "{" else "]"), ws(i + 1)
        while text[i] != closing:
            child: list[str] | None = None
            if closing == "}":
                key = _JSON_STRING.match(text, i)
                child = None if keys is None else [*keys, json.loads(key.group())]
                i = ws(ws(key.end()) + 1)  # skip the ':'
            i = ws(_json_value(text, i, child, hits))
            if text[i] == ",":
                i = ws(i + 1)
        return i + 1
    if text[i] == '"':
        return _JSON_STRING.match(text, i).end()
    number = _JSON_NUMBER.match(text, i)
    if number:
        if keys:
            hits.append((".".join(keys), json.loads(number.group()), i, number.end(), ""))
        return number.end()
    return _JSON_OTHER.match(text, i).end()


# --- YAML ---------------------------------------------------------------------------------


def _yaml(content: str) -> Iterator[Hit]:
    """Numeric leaves under mapping keys, located by PyYAML's own parser (each scalar node
    carries the span of its token). Numbers inside lists are data, not named settings."""
    import yaml  # a core dependency, imported only when a YAML surface is tuned

    try:
        nodes = list(yaml.compose_all(content, Loader=yaml.SafeLoader))
    except yaml.YAMLError as err:
        raise ValueError(str(err)) from err
    for root in nodes:
        if isinstance(root, yaml.MappingNode):
            yield from _yaml_mapping(root, [], yaml, content)


def _yaml_mapping(node: Any, keys: list[str], yaml: Any, content: str) -> Iterator[Hit]:
    for key_node, value in node.value:
        if not isinstance(key_node, yaml.ScalarNode):
            continue
        path = [*keys, str(key_node.value)]
        if isinstance(value, yaml.MappingNode):
            yield from _yaml_mapping(value, path, yaml, content)
        elif (isinstance(value, yaml.ScalarNode) and not value.style  # plain, not quoted
              and value.tag in ("tag:yaml.org,2002:int", "tag:yaml.org,2002:float")):
            parsed = yaml.safe_load(value.value)  # the same resolution, on the token alone
            if _is_number(parsed):
                start, end = value.start_mark.index, value.end_mark.index
                yield ".".join(path), parsed, start, end, _comment_after(content, end)


_FINDERS = {"py": _python, "toml": _toml, "json": _json, "yaml": _yaml}
