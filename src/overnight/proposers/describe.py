"""A description derived from an edit itself, for proposals whose author wrote none (a
coding agent that left no description file) or one that is not about the change (a small
model's `{ {` or `1 experiments so far (keep).`): the knobs it moved (`LR 0.04 → 0.031`),
else the functions it added, changed or removed (`train.py: edit forward(), Block.__init__()`),
else the lines it changed (`config.txt: lines 3–5`)."""

from __future__ import annotations

import ast
import difflib
import re
from typing import Any

from overnight.proposers.tune.knobs import find_knobs
from overnight.store.records import ExperimentRecord

LIMIT = 120


def _knob_moves(path: str, before: str, after: str) -> tuple[list[str], bool]:
    """(`NAME old → new` for each knob whose value changed, whether that is the whole edit)."""
    old = {k.name: k for k in find_knobs(path, before)}
    new = {k.name: k for k in find_knobs(path, after)}
    moved = [n for n in new if n in old and old[n].text != new[n].text]
    text = before
    for name in sorted(moved, key=lambda n: old[n].start, reverse=True):
        k = old[name]
        text = text[: k.start] + new[name].text + text[k.end :]
    return [f"{n} {old[n].text} → {new[n].text}" for n in moved], bool(moved) and text == after


def _functions(source: str) -> dict[str, str] | None:
    """Qualified name -> source of every function and class body; None if not Python."""
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError, RecursionError):
        return None
    lines = source.splitlines()
    found: dict[str, str] = {}

    def walk(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                name = f"{prefix}{child.name}"
                end = child.end_lineno or child.lineno
                found[name] = "\n".join(lines[child.lineno - 1 : end])
                walk(child, name + ".")

    walk(tree, "")
    return found


def _changed_lines(before: str, after: str) -> list[tuple[int, int]]:
    """Line ranges of `after` (1-based, inclusive) that differ from `before`."""
    matcher = difflib.SequenceMatcher(a=before.splitlines(), b=after.splitlines(), autojunk=False)
    return [(j1 + 1, max(j1 + 1, j2)) for tag, _, _, j1, j2 in matcher.get_opcodes()
            if tag != "equal"]  # fmt: skip


def _structure(before: str, after: str) -> str | None:
    """`add f(); edit g(), C.h(); remove k()`, or None when not both Python."""
    old, new = _functions(before), _functions(after)
    if old is None or new is None:
        return None
    # Only the innermost changed definitions: a changed method also changes its class.
    edited = [n for n in new if n in old and new[n] != old[n]]
    edited = [n for n in edited if not any(m.startswith(n + ".") for m in edited)]
    # A new (or deleted) class is one change, not one per method.
    fresh = [n for n in new if n not in old]
    gone = [n for n in old if n not in new]
    added = [n for n in fresh if n.rpartition(".")[0] not in fresh]
    removed = [n for n in gone if n.rpartition(".")[0] not in gone]
    parts = []
    for verb, names in (("add", added), ("edit", edited), ("remove", removed)):
        if names:
            parts.append(f"{verb} " + ", ".join(f"{n}()" for n in names))
    return "; ".join(parts) or None


def _lines(before: str, after: str) -> str:
    ranges = _changed_lines(before, after)
    if not ranges:
        return "whitespace"
    shown = ", ".join(f"{a}" if a == b else f"{a}–{b}" for a, b in ranges[:4])
    more = f" and {len(ranges) - 4} more" if len(ranges) > 4 else ""
    plural = "s" if len(ranges) > 1 or ranges[0][0] != ranges[0][1] else ""
    return f"line{plural} {shown}{more}"


def describe_change(before: dict[str, str], after: dict[str, str]) -> str:
    """One line for the change from `before` to `after` (path -> content; a path missing
    from `before` is a new file)."""
    parts: list[str] = []
    paths = sorted(p for p in after if after[p] != before.get(p))
    for path in paths:
        old, new = before.get(path, ""), after[path]
        moves, only_knobs = _knob_moves(path, old, new)
        where = f"{path}: " if len(paths) > 1 or not moves else ""
        if only_knobs:
            parts.append(where + ", ".join(moves))
            continue
        what = _structure(old, new) if path.endswith(".py") else None
        rest = what or _lines(old, new)
        if moves:
            parts.append(f"{', '.join(moves)}; {path}: {rest}")
        else:
            parts.append(f"{path}: {rest}")
    text = "; ".join(parts) or "no change"
    return text if len(text) <= LIMIT else text[: LIMIT - 1] + "…"


_WORD = re.compile(r"[A-Za-z_][A-Za-z_0-9]+|\d+(?:\.\d+)?(?:[eE]-?\d+)?")
# Words that say nothing about which change it is (English, or Python's own).
_COMMON = frozenset(
    "an and as at be by do for from if in is it no not of on or so the this that to try "
    "use set we with".split()
)


def _words(text: str) -> set[str]:
    """Numbers, and identifiers of 2+ characters compared without case or underscores."""
    words = {w.lower().replace("_", "") for w in _WORD.findall(text)
             if len(w) > 1 or w.isdigit()}  # fmt: skip
    return words - _COMMON


def is_about(text: str, before: dict[str, str], after: dict[str, str]) -> bool:
    """Whether a description names something the change touches: a word or number of a
    line it removed or added (`use GELU` for a line now calling gelu, `LR to 3e-4`)."""
    touched: set[str] = set()
    for path in after:
        old, new = before.get(path, "").splitlines(), after[path].splitlines()
        matcher = difflib.SequenceMatcher(a=old, b=new, autojunk=False)
        for tag, i1, i2, j1, j2 in matcher.get_opcodes():
            if tag != "equal":
                touched |= _words("\n".join(old[i1:i2] + new[j1:j2]))
    return bool(_words(text) & touched)


def describe(text: str, before: dict[str, str], after: dict[str, str]) -> str:
    """The author's description when it is about the change, else the change's own."""
    text = " ".join(text.split())
    if text and is_about(text, before, after):
        return text
    return describe_change(before, after)


def knob_change(before: dict[str, str], after: dict[str, str]) -> str | None:
    """`LR 0.04 → 0.031, …` when the change moves knobs and nothing else, else None."""
    paths = sorted(p for p in after if after[p] != before.get(p))
    if not paths or any(p not in before for p in paths):
        return None
    moves = []
    for path in paths:
        moved, only = _knob_moves(path, before[path], after[path])
        if not only:
            return None
        moves += moved
    return ", ".join(moves)


_MOVE = re.compile(r"^(\S+) (\S+) → (\S+)$")


def _moves(change: str) -> dict[str, str] | None:
    """{knob: new value} of a knob change as knob_change writes it; None for other text."""
    out = {}
    for part in change.split(", "):
        m = _MOVE.match(part)
        if m is None:
            return None
        out[m.group(1)] = m.group(3)
    return out or None


def repeats(change: str, in_flight: list[dict[str, Any]], history: list[ExperimentRecord],
            best: int) -> str:  # fmt: skip
    """Why the knob change `change` (as knob_change writes it) is not worth a run: a change
    in flight sets these knobs to these values already (once it lands, nothing would be
    left to measure), or the same change was measured since the current best. "" if not."""
    mine = _moves(change) or {}
    for entry in in_flight:
        theirs = _moves(str(entry.get("description", ""))) or {}
        if mine and all(theirs.get(k) == v for k, v in mine.items()):
            n = entry.get("experiment")
            where = f"experiment {n} (being measured now)" if n else "a proposal waiting to run"
            return f"{where} already makes this change ({entry.get('description')})"
    for rec in reversed(history):
        if rec.experiment <= best:
            break
        if rec.description == change and rec.status not in ("invalid", None):
            return f"it repeats experiment {rec.experiment}, already measured ({rec.status})"
    return ""
