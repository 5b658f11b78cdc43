"""What a user states about a knob: whether to tune it, its range, its scale.

One small grammar, written in two places:

- on the knob's own line, after `tune:` in its comment:
  `LR = 0.04  # Adam step size; tune: 1e-4..0.1 log`
- in `overnight.toml`, by knob name (globs allowed):
  `[proposer] knobs = { LR = "1e-4..0.1 log", SEED = "on" }`

Words (separated by spaces or commas): a range `LOW..HIGH`; a choice `{a, b, c}`; a scale
`log`, `linear`, `pow2` (powers of two); `int` (whole numbers only); `off` (never tune it)
or `on` (tune it although a default leaves it alone); `divides NAME` (the value must
divide knob NAME's value). The config's `include` and `exclude` lists (globs on knob names)
choose which knobs are searched at all; a spec in the config wins over one in a comment.
"""

from __future__ import annotations

import ast
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from fnmatch import fnmatchcase
from typing import Any

from overnight.proposers.tune.knobs import Knob

Number = int | float

# Constants that are not hyperparameters: a seed change is noise, not an improvement, and a
# hardware peak only changes a reported figure. `include`, or `on` in a spec, overrides.
DEFAULT_EXCLUDE = ("*SEED*", "*seed*", "*Seed*", "*PEAK_FLOPS*")

_NUMBER = r"[+-]?(?:\d[\d_]*\.?\d*|\.\d+)(?:[eE][+-]?\d+)?(?:\s*\*\*\s*[+-]?\d+)?"
_TOKEN = re.compile(
    rf"\s*(?:(?P<range>(?P<low>{_NUMBER})\s*\.\.\s*(?P<high>{_NUMBER}))"
    r"|\{(?P<choices>[^}]*)\}"
    r"|divides\s+(?P<divides>[A-Za-z_][\w.\[\]:/-]*)"
    r"|(?P<word>[A-Za-z][\w-]*))\s*,?"
)
_WORDS = {
    "log": ("scale", "log"), "linear": ("scale", "linear"), "lin": ("scale", "linear"),
    "pow2": ("scale", "pow2"), "power-of-two": ("scale", "pow2"),
    "int": ("integer", True), "integer": ("integer", True),
    "off": ("tune", False), "skip": ("tune", False), "fixed": ("tune", False),
    "on": ("tune", True),
}
HELP = (
    "expected words like 1e-4..0.1 (a range), {1, 2, 4} (a choice), log, linear, pow2, int,"
    " off, on or divides NAME"
)


@dataclass(frozen=True)
class KnobSpec:
    tune: bool | None = None  # False: never; True: although a default would skip it
    low: Number | None = None
    high: Number | None = None
    scale: str | None = None  # "log" | "linear" | "pow2"
    integer: bool | None = None
    choices: tuple[Number, ...] = ()
    divides: str = ""

    @property
    def declared_range(self) -> bool:
        return self.low is not None or bool(self.choices)

    def over(self, other: KnobSpec) -> KnobSpec:
        """This spec, with each field it leaves open taken from `other`."""
        filled = {
            f: getattr(other, f) for f in self.__dataclass_fields__
            if getattr(self, f) in (None, (), "")
        }
        return replace(self, **filled)


def _number(text: str) -> Number:
    try:
        node = ast.parse(text.replace("_", "").strip(), mode="eval").body
        value = _eval(node)
    except (SyntaxError, ValueError, ArithmeticError):
        raise ValueError(f"not a number: {text.strip()!r}") from None
    if not math.isfinite(value):
        raise ValueError(f"not a finite number: {text.strip()!r}")
    return value


def _eval(node: ast.expr) -> Number:
    if isinstance(node, ast.Constant) and type(node.value) in (int, float):
        return node.value  # type: ignore[no-any-return]
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub | ast.UAdd):
        value = _eval(node.operand)
        return -value if isinstance(node.op, ast.USub) else value
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Pow):
        base, exp = _eval(node.left), _eval(node.right)
        if abs(exp) <= 64:
            return base**exp  # type: ignore[no-any-return]
    raise ValueError


def parse_spec(text: str) -> KnobSpec:
    """A spec from its words; raises ValueError with a message a user can act on."""
    fields: dict[str, object] = {}
    pos, text = 0, text.strip()
    while pos < len(text):
        match = _TOKEN.match(text, pos)
        if not match or match.end() == pos:
            raise ValueError(f"cannot read {text[pos:]!r}: {HELP}")
        pos = match.end()
        if match["range"]:
            low, high = _number(match["low"]), _number(match["high"])
            if not low < high:
                raise ValueError(f"range {match['range']!r}: expected LOW < HIGH")
            fields["low"], fields["high"] = low, high
        elif match["choices"] is not None:
            parts = [p for p in re.split(r"[,\s]+", match["choices"]) if p]
            if not parts:
                raise ValueError("choice {}: expected at least one value, e.g. {1, 2, 4}")
            fields["choices"] = tuple(dict.fromkeys(_number(p) for p in parts))
        elif match["divides"]:
            fields["divides"] = match["divides"]
        else:
            word = match["word"].lower()
            if word not in _WORDS:
                raise ValueError(f"unknown word {match['word']!r}: {HELP}")
            key, value = _WORDS[word]
            fields[key] = value
    spec = KnobSpec(**fields)  # type: ignore[arg-type]
    if spec.scale in ("log", "pow2") and spec.low is not None and spec.low <= 0:
        raise ValueError(f"a {spec.scale} scale needs a range above 0, got {spec.low}..")
    return spec


_COMMENT_SPEC = re.compile(r"(?:^|[\s;(])tune:\s*(?P<spec>[^;#]*)")


def comment_spec(comment: str) -> KnobSpec | None:
    """The spec in a knob's line comment (`... tune: 16..1024 pow2`), if it has one."""
    match = _COMMENT_SPEC.search(" " + comment)
    return parse_spec(match["spec"]) if match else None


def _names(name: str) -> list[str]:
    """The names a pattern may match: `a.py:LR[1]` is also `LR[1]`, `a.py:LR` and `LR`."""
    out = [name]
    if ":" in name:
        out.append(name.split(":", 1)[1])
    out += [n.split("[", 1)[0] for n in list(out) if "[" in n]
    return out


def matches(name: str, patterns: Iterable[str]) -> bool:
    return any(fnmatchcase(n, p) for p in patterns for n in _names(name))


def config_spec(name: str, specs: Mapping[str, KnobSpec]) -> KnobSpec | None:
    """The config's spec for a knob: an exact name first, else the first matching glob."""
    for candidate in _names(name):
        if candidate in specs:
            return specs[candidate]
    return next((s for p, s in specs.items() if matches(name, [p])), None)


def tuned(
    name: str, spec: KnobSpec, include: Iterable[str] = (), exclude: Iterable[str] = ()
) -> bool:
    """Whether a knob is searched: `exclude` and `off` always win, `on` always asks for it;
    an `include` list names all the others that are; without one, every knob is but the
    default exclusions (*SEED*), unless a spec declares a range for it."""
    include, exclude = list(include), list(exclude)
    if spec.tune is False or matches(name, exclude):
        return False
    if spec.tune is True:
        return True
    if include:
        return matches(name, include)
    if spec.declared_range:
        return True
    return not matches(name, DEFAULT_EXCLUDE)


@dataclass
class KnobRules:
    """The `[proposer]` section's include/exclude lists and knob specs, applied to the
    knobs of a surface together with their comments."""

    include: list[str] = field(default_factory=list)
    exclude: list[str] = field(default_factory=list)
    specs: dict[str, KnobSpec] = field(default_factory=dict)

    @classmethod
    def from_config(cls, section: Any) -> KnobRules:
        """From a `ProposerConfig` (or None: the defaults)."""
        return cls(
            list(getattr(section, "include", None) or []),
            list(getattr(section, "exclude", None) or []),
            {n: parse_spec(t) for n, t in (getattr(section, "knobs", None) or {}).items()},
        )

    def specs_for(self, knobs: Mapping[str, Knob]) -> dict[str, KnobSpec]:
        """Each knob's spec, the config's over its comment's; ValueError names the file and
        knob of a spec that cannot be read or names a knob that does not exist."""
        out = {}
        for name, knob in knobs.items():
            try:
                own = comment_spec(knob.comment) or KnobSpec()
            except ValueError as exc:
                raise ValueError(f"{knob.path}: {knob.name}: tune: {exc}") from None
            spec = (config_spec(name, self.specs) or KnobSpec()).over(own)
            if spec.divides:
                resolve(spec.divides, knobs, f"{knob.path}: {knob.name}")
            out[name] = spec
        return out

    def tuned(self, name: str, spec: KnobSpec) -> bool:
        return tuned(name, spec, self.include, self.exclude)


def resolve(name: str, knobs: Mapping[str, Knob], who: str = "") -> str:
    """The key of the knob a `divides NAME` refers to."""
    found = [k for k, knob in knobs.items() if name in (k, knob.name)]
    if not found:
        raise ValueError(f"{who}: tune: divides {name}: no numeric knob named {name}")
    return found[0]
