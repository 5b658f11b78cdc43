"""A three-way merge of text at the level of words, for changes on neighbouring lines.

`git merge-file` (and `git apply --3way`, `git cherry-pick`) merge by lines and call two
changes a conflict when they touch the same *or adjacent* lines. In a one-file study nearly
every change is next to another one (knobs sit on consecutive lines), so a line merge
throws away changes that never clashed. Here the three versions are split into tokens —
words, numbers, runs of blanks, single line breaks, single punctuation marks; a number
(`3.0`, `1e-3`, `0x1F`) and a dotted name (`torch.float32`) are one token each, so two
changes of the same number or name always meet — and each side's edits against the common
base are found with diff-match-patch's Myers diff over those tokens. Two edits from
different sides conflict when they overlap or touch (no unchanged token between them);
anything else is combined. Identical edits on both sides
are taken once. Nothing is ever resolved by guessing: a conflict returns no text, only the
places and the three texts there.

A diff that runs past diff-match-patch's time limit comes back coarser (larger edits),
never wrong: at worst more conflicts, never a silent mis-merge.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_TOKEN = re.compile(
    r"\r\n|[\r\n]|[^\S\r\n]+"  # a line break; a run of blanks
    r"|(?:\d[\d_]*\.?[\d_]*|\.\d[\d_]*)(?:[eE][+-]?\d+)?\w*"  # a number, with its suffix
    r"|\w+(?:\.\w+)*"  # a word or a dotted name
    r"|[^\w\s]"  # one punctuation mark
)
DIFF_TIMEOUT_S = 5.0


def tokens(text: str) -> list[str]:
    """The tokens of `text`; joined, they give `text` back exactly."""
    return _TOKEN.findall(text)


@dataclass(frozen=True)
class Edit:
    """Base tokens [start, end) replaced by `new` (start == end: an insertion)."""

    start: int
    end: int
    new: tuple[str, ...]

    @property
    def growth(self) -> int:
        return len(self.new) - (self.end - self.start)


@dataclass
class Clash:
    """Where both sides changed the same text: 1-based line in `ours` and the lines of each
    version around it."""

    line: int
    base: str
    ours: str
    theirs: str


def _encode(*seqs: list[str]) -> list[str]:
    """Each distinct token as one character, so the character diff is a token diff."""
    table: dict[str, str] = {}
    return ["".join(table.setdefault(t, chr(len(table) + 32)) for t in seq) for seq in seqs]


def edits(a: list[str], b: list[str], ea: str | None = None, eb: str | None = None) -> list[Edit]:
    """The edits that turn token list `a` into `b`, in order, each separated from the next by
    at least one unchanged token."""
    from diff_match_patch import diff_match_patch

    if ea is None or eb is None:
        ea, eb = _encode(a, b)
    dmp = diff_match_patch()
    dmp.Diff_Timeout = DIFF_TIMEOUT_S
    out: list[Edit] = []
    i = j = 0
    start: int | None = None
    new: list[str] = []
    for op, text in dmp.diff_main(ea, eb, False):
        n = len(text)
        if op == 0:
            if start is not None:
                out.append(Edit(start, i, tuple(new)))
                start, new = None, []
            i, j = i + n, j + n
            continue
        if start is None:
            start = i
        if op < 0:
            i += n
        else:
            new += b[j : j + n]
            j += n
    if start is not None:
        out.append(Edit(start, i, tuple(new)))
    return out


def _apply(base: list[str], start: int, end: int, side: list[Edit]) -> list[str]:
    """base[start:end] with the given edits (all inside that range) applied."""
    out, at = [], start
    for e in side:
        out += base[at : e.start]
        out += e.new
        at = e.end
    return out + base[at:end]


def _lines(text: str, lo: int, hi: int) -> str:
    """The whole lines of `text` spanning characters [lo, hi)."""
    start = text.rfind("\n", 0, lo) + 1
    stop = text.find("\n", max(hi - 1, lo)) if hi > lo else text.find("\n", lo)
    return text[start : len(text) if stop < 0 else stop]


def merge(base: str, ours: str, theirs: str) -> tuple[str | None, list[Clash]]:
    """`theirs`' change of `base` carried into `ours`: (merged text, []) or (None, clashes)."""
    bt, ot, tt = tokens(base), tokens(ours), tokens(theirs)
    eb, eo, et = _encode(bt, ot, tt)
    mine, other = edits(bt, ot, eb, eo), edits(bt, tt, eb, et)
    tagged = [(e.start, e.end, 0, e) for e in mine] + [(e.start, e.end, 1, e) for e in other]
    tagged.sort(key=lambda x: x[:3])
    groups: list[list[tuple[int, int, int, Edit]]] = []
    for item in tagged:
        if groups and item[0] <= max(g[1] for g in groups[-1]):
            groups[-1].append(item)  # overlapping or touching: decided together
        else:
            groups.append([item])
    out: list[str] = []
    clashes: list[Clash] = []
    at = 0
    shift = [0, 0]  # how much each side has grown before the current group
    for group in groups:
        lo, hi = group[0][0], max(g[1] for g in group)
        sides = [[g[3] for g in group if g[2] == s] for s in (0, 1)]
        versions = [_apply(bt, lo, hi, side) for side in sides]
        out += bt[at:lo]
        if not sides[0] or not sides[1] or versions[0] == versions[1]:
            out += versions[1] if sides[1] else versions[0]
        else:
            clashes.append(_clash(base, ours, theirs, (bt, ot, tt), lo, hi, shift, versions))
        for s in (0, 1):
            shift[s] += sum(e.growth for e in sides[s])
        at = hi
    if clashes:
        unique = {(c.line, c.base, c.ours, c.theirs): c for c in clashes}  # one per line(s)
        return None, list(unique.values())
    return "".join(out + bt[at:]), []


def _clash(
    base: str, ours: str, theirs: str, toks: tuple[list[str], ...], lo: int, hi: int,
    shift: list[int], versions: list[list[str]],
) -> Clash:  # fmt: skip
    bt, ot, tt = toks

    def span(text: str, seq: list[str], start: int, length: int) -> tuple[str, int]:
        c0 = sum(map(len, seq[:start]))
        c1 = c0 + sum(map(len, seq[start : start + length]))
        return _lines(text, c0, c1), c0

    b_text, _ = span(base, bt, lo, hi - lo)
    o_text, o_at = span(ours, ot, lo + shift[0], len(versions[0]))
    t_text, _ = span(theirs, tt, lo + shift[1], len(versions[1]))
    return Clash(ours.count("\n", 0, o_at) + 1, b_text, o_text, t_text)
