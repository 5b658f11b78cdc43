"""SEARCH/REPLACE edits (DESIGN §4.7) and whole-file rewrites, parsed from a model's reply.

All or nothing: `apply_edits` returns the new content of every changed surface file, or
raises `EditError` with a precise reason (which block, which file, what went wrong) that the
model is shown next time. A block that matches nothing is never skipped silently.

Matching is exact first; then tolerant of whitespace (indentation shifted as a whole,
trailing spaces, runs of spaces, blank lines around the block); then, as a last resort,
with the line-number gutter of our own prompt stripped (models sometimes copy it).
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass

SEARCH = re.compile(r"^\s*<{5,9} ?SEARCH\s*$")
DIVIDER = re.compile(r"^\s*={5,9}\s*$")
REPLACE = re.compile(r"^\s*>{5,9} ?REPLACE\s*$")
FENCE = re.compile(r"^\s*(`{3,}|~{3,})\s*[\w+.#-]*\s*$")
# What a path line may look like once decorations (`, *, #, trailing colon) are stripped.
PATH = re.compile(r"^[\w][\w./@+-]*$")
# "  12| code": a weak model may copy a line-number gutter into its reply.
GUTTER = re.compile(r"^\s*\d+\s?[|│:]\s?")


class EditError(ValueError):
    """The reply holds no usable edit; the message says exactly why."""


@dataclass
class Block:
    path: str | None  # as written by the model; None when no path line preceded the block
    search: list[str]
    replace: list[str]
    number: int  # 1-based position among the reply's blocks
    line: int  # 1-based line of `<<<<<<< SEARCH` in the reply


@dataclass
class WholeFile:
    path: str
    content: str
    line: int


def _clean_path(line: str) -> str:
    text = line.strip().strip("`*#").strip()
    text = text.removesuffix(":").strip().strip("`*").strip()
    for prefix in ("./", "a/", "b/"):
        text = text.removeprefix(prefix)
    return text


def _path_before(lines: list[str], i: int) -> str | None:
    """The path line above position `i`, skipping blank lines and one fence opener."""
    j = i - 1
    while j >= 0 and not lines[j].strip():
        j -= 1
    if j >= 0 and FENCE.match(lines[j]):
        j -= 1
        while j >= 0 and not lines[j].strip():
            j -= 1
    if j < 0:
        return None
    candidate = _clean_path(lines[j])
    return candidate if PATH.match(candidate) and ("." in candidate or "/" in candidate) else None


def parse_blocks(reply: str) -> list[Block]:
    """Every SEARCH/REPLACE block of `reply`; malformed or cut-off blocks raise EditError."""
    lines = reply.splitlines()
    blocks: list[Block] = []
    i = 0
    while i < len(lines):
        if REPLACE.match(lines[i]):
            raise EditError(f"line {i + 1}: '>>>>>>> REPLACE' without a '<<<<<<< SEARCH' before it")
        if not SEARCH.match(lines[i]):
            i += 1
            continue
        start, number = i, len(blocks) + 1
        where = f"block {number} (reply line {start + 1})"
        search: list[str] = []
        i += 1
        while i < len(lines) and not DIVIDER.match(lines[i]):
            if SEARCH.match(lines[i]) or REPLACE.match(lines[i]):
                raise EditError(f"{where}: expected '=======' before line {i + 1}")
            search.append(lines[i])
            i += 1
        if i == len(lines):
            raise EditError(f"{where}: the reply ends before '=======' (cut off?)")
        replace: list[str] = []
        i += 1
        while i < len(lines) and not REPLACE.match(lines[i]):
            if SEARCH.match(lines[i]) or DIVIDER.match(lines[i]):
                raise EditError(f"{where}: expected '>>>>>>> REPLACE' before line {i + 1}")
            replace.append(lines[i])
            i += 1
        if i == len(lines):
            raise EditError(f"{where}: the reply ends before '>>>>>>> REPLACE' (cut off?)")
        # A block without its own path line continues the file of the block before it.
        path = _path_before(lines, start) or (blocks[-1].path if blocks else None)
        blocks.append(Block(path, search, replace, number, start + 1))
        i += 1
    return blocks


def parse_whole_files(reply: str) -> list[WholeFile]:
    """Fenced code blocks directly under a path line: complete new contents of that file."""
    lines = reply.splitlines()
    found: list[WholeFile] = []
    i = 0
    while i < len(lines):
        opener = FENCE.match(lines[i])
        if opener is None:
            i += 1
            continue
        fence = opener.group(1)
        path = _path_before(lines, i)
        end = next((j for j in range(i + 1, len(lines)) if lines[j].strip() == fence), None)
        if end is None:
            if path is None:
                break  # an unclosed fence of prose or an example: nothing more to find
            raise EditError(f"the new content of {path} (reply line {i + 1}) is not closed by "
                            f"{fence} (cut off?)")  # fmt: skip
        if path is not None:
            found.append(WholeFile(path, "\n".join(lines[i + 1 : end]) + "\n", i + 1))
        i = end + 1  # skip the whole fenced block: its closing fence is no opener
    return found


def found_instead(reply: str) -> str:
    """What a reply without a usable edit holds instead, in a few words."""
    lines = reply.splitlines()
    if not reply.strip():
        return "an empty reply"
    fences = [i for i, line in enumerate(lines) if FENCE.match(line)]
    if fences:
        pathless = _path_before(lines, fences[0]) is None
        what = "a code block without a file path line above it" if pathless else "a code block"
        return what if len(fences) % 2 == 0 else what + " that is never closed"
    if lines and lines[0].lstrip().startswith(("{", "[")):
        return "JSON"
    return f"prose only, {len(lines)} line{'s' if len(lines) != 1 else ''}"


def _resolve(path: str | None, surface: Mapping[str, str], what: str) -> str:
    files = sorted(surface)
    if path is None:
        if len(files) == 1:
            return files[0]
        raise EditError(f"{what} has no file path line before it; put the path of one of "
                        f"{', '.join(files)} on the line above")  # fmt: skip
    if path in surface:
        return path
    # "/abs/repo/train.py" or "repo/train.py": accept when it ends in exactly one surface path.
    tails = [f for f in files if path.endswith("/" + f)]
    if len(tails) == 1:
        return tails[0]
    raise EditError(f"{what} edits {path}, which is outside the surface (only "
                    f"{', '.join(files)} may change)")  # fmt: skip


def _norm(line: str) -> str:
    return " ".join(line.split())


def _find(haystack: list[str], needle: list[str]) -> list[int]:
    m = len(needle)
    return [
        i for i in range(len(haystack) - m + 1)
        if haystack[i] == needle[0] and haystack[i : i + m] == needle
    ]  # fmt: skip


def _trim(search: list[str], replace: list[str]) -> tuple[list[str], list[str]]:
    """Drop blank lines around the SEARCH text, and as many around the REPLACE text."""
    lead = next((k for k, s in enumerate(search) if s.strip()), len(search))
    trail = next((k for k, s in enumerate(reversed(search)) if s.strip()), 0)
    search = search[lead : len(search) - trail]
    for _ in range(lead):
        if replace and not replace[0].strip():
            replace = replace[1:]
    for _ in range(trail):
        if replace and not replace[-1].strip():
            replace = replace[:-1]
    return search, replace


def _reindent(search: list[str], found: list[str], replace: list[str]) -> list[str]:
    """Shift REPLACE by the indentation the model got wrong in SEARCH."""
    first = next((k for k, s in enumerate(search) if s.strip()), None)
    if first is None:
        return replace
    said = search[first][: len(search[first]) - len(search[first].lstrip())]
    real = found[first][: len(found[first]) - len(found[first].lstrip())]
    if said == real:
        return replace
    return [real + r[len(said) :] if r.startswith(said) and r.strip() else r for r in replace]


def _locate(bare: list[str], block: Block) -> tuple[int, int, list[str]] | str:
    """(start, length, replacement lines) of the block's unique match, or why there is none."""
    attempts: list[tuple[list[str], list[str], Callable[[str], str]]] = [
        (block.search, block.replace, lambda s: s),
        (*_trim(block.search, block.replace), _norm),
    ]
    searched = [s for s in block.search if s.strip()]
    if searched and all(GUTTER.match(s) for s in searched):
        strip = [GUTTER.sub("", s, count=1) for s in block.search]
        replace = block.replace
        if [r for r in replace if r.strip()] and all(GUTTER.match(r) for r in replace if r.strip()):
            replace = [GUTTER.sub("", r, count=1) for r in replace]
        attempts.append((*_trim(strip, replace), _norm))
    for search, replace, key in attempts:
        if not search:
            continue
        hits = _find([key(b) for b in bare], [key(s) for s in search])
        if len(hits) == 1:
            start = hits[0]
            found = bare[start : start + len(search)]
            return start, len(search), _reindent(search, found, replace)
        if len(hits) > 1:
            at = ", ".join(str(h + 1) for h in hits[:5])
            return (f"its SEARCH text matches {len(hits)} places (lines {at}); include more "
                    "surrounding lines so that it matches exactly one")  # fmt: skip
    return "its SEARCH text matches nothing, not even ignoring whitespace" + _closest(bare, block)


def _closest(bare: list[str], block: Block) -> str:
    first = next((s for s in block.search if s.strip()), "")
    normed = [_norm(b) for b in bare]
    near = difflib.get_close_matches(_norm(first), normed, n=1, cutoff=0.6)
    if not near:
        return "; copy the lines to replace exactly from the current file"
    line = normed.index(near[0])
    return f"; the closest line is {line + 1}: `{bare[line].strip()[:120]}`"


def apply_block(content: str, block: Block, path: str) -> str:
    what = f"block {block.number} for {path}"
    if not any(s.strip() for s in block.search):
        if content.strip():
            raise EditError(f"{what} has an empty SEARCH section; quote the lines to replace")
        return "\n".join(block.replace) + "\n" if block.replace else ""
    newline = "\r\n" if "\r\n" in content else "\n"
    lines = content.splitlines(keepends=True)
    bare = [ln.rstrip("\r\n") for ln in lines]
    located = _locate(bare, block)
    if isinstance(located, str):
        raise EditError(f"{what}: {located}")
    start, length, replace = located
    ending = lines[start + length - 1][len(bare[start + length - 1]) :]
    new = [r + newline for r in replace]
    if new:
        new[-1] = replace[-1] + ending  # the last line keeps the file's final (missing) newline
    return "".join(lines[:start] + new + lines[start + length :])


def apply_edits(reply: str, surface: Mapping[str, str], whole_files: bool) -> dict[str, str]:
    """The new content of each surface file the reply changes (all blocks applied) or
    EditError. `whole_files`: accept complete new files (offered for small surfaces)."""
    blocks = parse_blocks(reply)
    wholes = [] if blocks else parse_whole_files(reply)
    if not blocks and not wholes:
        raise EditError(f"the reply contains no SEARCH/REPLACE block (found "
                        f"{found_instead(reply)})")  # fmt: skip
    new = dict(surface)
    if wholes:
        if not whole_files:
            raise EditError("whole-file rewrites are not accepted for a surface this large; "
                            "use SEARCH/REPLACE blocks")  # fmt: skip
        seen: set[str] = set()
        for w in wholes:
            path = _resolve(w.path, surface, f"the file at reply line {w.line}")
            if path in seen:
                raise EditError(f"the reply rewrites {path} twice")
            seen.add(path)
            if not w.content.strip():
                raise EditError(f"the new content of {path} is empty")
            new[path] = w.content
    for block in blocks:
        path = _resolve(block.path, surface, f"block {block.number} (reply line {block.line})")
        new[path] = apply_block(new[path], block, path)
    return {path: text for path, text in new.items() if text != surface.get(path)}


def reapply_blocks(reply: str | None, surface: Mapping[str, str]) -> dict[str, str] | None:
    """The reply's SEARCH/REPLACE blocks applied to another surface (a newer best, the
    user's checkout): the changed files, or None when the reply has no blocks (a whole-file
    rewrite) or a block no longer matches exactly one place."""
    if not reply or not parse_blocks(reply):
        return None
    try:
        return apply_edits(reply, surface, whole_files=False)
    except EditError:
        return None
