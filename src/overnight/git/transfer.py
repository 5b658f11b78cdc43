"""Carrying a change from the code it was made on to other code: the one mechanism behind
re-basing a stale proposal onto a moved best, `overnight apply`, `finish --drop` and the
leave-one-out variants of `finish --ablate`.

A change is known as the files before and after it (and, where its proposer can redo it,
a way to re-apply it). Carrying it onto a target tries, in order:

1. the proposer's own re-application, when it has one: `tune` sets the knobs it moved to
   their values in the target (knob edits never clash by meaning, only by line); `llm`
   re-applies the SEARCH/REPLACE blocks of its reply when every block still matches;
2. a word-level three-way merge of each file (`tokenmerge.merge`), which combines edits on
   neighbouring lines and refuses where both sides changed the same text.

A real conflict is reported with the file, the line and the three texts; nothing is
resolved by guessing. Whoever carries a change onto code it was not measured on measures it
again (the pipeline does; `apply` and `finish` say so).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from overnight.git.tokenmerge import merge

Content = str | None  # a file's text (bytes decoded with surrogateescape); None: absent
# The proposer's own re-application: target surface (path -> text) -> new files, or None.
Reapply = Callable[[dict[str, str]], dict[str, str] | None]


def decode(data: bytes | None) -> Content:
    """File bytes as text that encodes back to the very same bytes."""
    return None if data is None else data.decode("utf-8", "surrogateescape")


def encode(text: Content) -> bytes | None:
    return None if text is None else text.encode("utf-8", "surrogateescape")


def _short(text: str, limit: int = 100) -> str:
    lines = [" ".join(line.split()) for line in text.splitlines() if line.strip()]
    out = " ⏎ ".join(lines) or "(nothing)"
    return out if len(out) <= limit else out[: limit - 1] + "…"


@dataclass
class Conflict:
    """Both sides changed the same text of `path` (or one deleted what the other edited)."""

    path: str
    line: int | None  # 1-based line in the target, when it is a text conflict
    base: str  # the text the change was made on
    here: str  # what the target has there
    change: str  # what the change makes of it

    def describe(self) -> str:
        where = f"{self.path} line {self.line}" if self.line else self.path
        return (f"{where}: the change turns `{_short(self.base)}` into `{_short(self.change)}`"
                f", but here it reads `{_short(self.here)}`")  # fmt: skip

    def as_dict(self) -> dict[str, Any]:
        return {"path": self.path, "line": self.line, "base": self.base, "here": self.here,
                "change": self.change}  # fmt: skip


@dataclass
class Carried:
    """A change carried onto a target: the new content of every path it changes (None when
    it does not carry), how, and what stood in the way."""

    files: dict[str, Content] | None
    how: str  # "proposer" (its own re-application) | "merge" (word-level three-way)
    by: str = ""  # the proposer whose re-application was used
    conflicts: list[Conflict] = field(default_factory=list)
    already: list[str] = field(default_factory=list)  # paths that had the change already

    @property
    def paths(self) -> list[str]:
        return sorted({c.path for c in self.conflicts})

    def reason(self) -> str:
        """One line: every conflict with its place and text."""
        return "; ".join(c.describe() for c in self.conflicts)


def _shown(text: Content) -> str:
    return "(absent)" if text is None else "(binary)" if "\0" in text else text


def merge_file(
    path: str, base: Content, here: Content, change: Content
) -> tuple[Content, list[Conflict]]:
    """`path` as `here` plus the change base → change: (content, []) or (None, conflicts)."""
    if here == change or base == change:
        return here, []  # already there, or nothing to carry
    if here == base:
        return change, []
    binary = any(t is not None and "\0" in t for t in (base, here, change))
    if base is None or here is None or change is None or binary:
        # Added, deleted or binary on one side and different on the other: no text to merge.
        return None, [Conflict(path, None, _shown(base), _shown(here), _shown(change))]
    merged, clashes = merge(base, here, change)
    if merged is None:
        return None, [Conflict(path, c.line, c.base, c.ours, c.theirs) for c in clashes]
    return merged, []


def carry(
    before: Mapping[str, Content],
    after: Mapping[str, Content],
    target: Mapping[str, Content],
    reapply: Reapply | None = None,
    by: str = "",
) -> Carried:
    """The change `before` → `after` (path -> content; a path missing from `before` did
    not exist) carried onto `target`. `reapply`, the proposer's own way to redo the change,
    gets the target's text files (the whole surface, when the caller has it) and goes
    first; a proposer that cannot (or fails) leaves it to the word-level merge."""
    paths = sorted(p for p in after if after[p] != before.get(p))
    if reapply is not None:
        try:
            redone = reapply({p: t for p, t in target.items() if t is not None})
        except Exception:  # a proposer's bug must not stop a night or a review
            redone = None
        if redone is not None:
            files: dict[str, Content] = dict(redone)
            already = [p for p in files if files[p] == target.get(p)]
            return Carried(files, "proposer", by, already=already)
    files, conflicts, already = {}, [], []
    for path in paths:
        here = target.get(path)
        out, found = merge_file(path, before.get(path), here, after[path])
        if found:
            conflicts += found
            continue
        files[path] = out
        if out == here:
            already.append(path)
    if conflicts:
        return Carried(None, "merge", conflicts=conflicts)
    return Carried(files, "merge", already=already)
