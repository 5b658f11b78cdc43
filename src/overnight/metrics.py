"""Metric lines: `name: number` or `name=number` alone on a line (optional `METRIC ` prefix).

The last occurrence of a name wins. Every metric other than the study's primary one is a
secondary metric; the caller decides which is which.

A listing is not metrics: indented lines under a heading that ends with `:` belong to that
heading, like autoresearch's parameter counts

    Parameter counts:
      wte                     : 33,554,432
      scalars                 : 16

where `scalars: 16` names a part of the model, not a result. An indented line with no such
heading above it is a metric line as usual.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from pathlib import Path

# A carriage return also ends a line: progress bars rewrite a line with `\r`, and what the
# user saw on the terminal is the text after the last one. Each match starts AT the line
# break before the line (so the regex engine can skip ahead to candidate positions fast) and
# the possessive quantifiers fail non-metric lines without backtracking: ~10 ms per MB.
_METRIC_LINE = re.compile(
    rb"[\r\n][ \t]*+(?:METRIC[ \t]++)?"
    rb"([A-Za-z_][A-Za-z0-9_./-]*+)[ \t]*+[:=][ \t]*+"
    rb"([+-]?(?:(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?"
    rb"|[Nn][Aa][Nn]|[Ii][Nn][Ff](?:[Ii][Nn][Ii][Tt][Yy])?))"
    rb"[ \t]*+(?=[\r\n])",
)
_INDENT = b" \t"

# Reading in chunks keeps memory bounded however much a run prints; the regex scans each
# chunk at C speed instead of a Python loop per line.
_CHUNK = 1 << 20
# No metric line is this long, so a longer line (a progress bar without newlines, a dumped
# tensor) is skipped instead of being buffered whole.
_MAX_LINE = 1 << 16


class _Listing:
    """Whether the text scanned so far ends inside a listing (indented lines under a
    heading line that ends with `:`); carried from one buffer to the next."""

    def __init__(self) -> None:
        self.open = False

    def update(self, seg: bytes) -> None:
        """Account for the lines of `seg` (which starts at a line break): the last line that
        is not indented decides, and an all-indented `seg` changes nothing."""
        end = len(seg)
        while end > 0:
            brk = max(seg.rfind(b"\n", 0, end), seg.rfind(b"\r", 0, end))
            line = seg[brk + 1 : end]
            if line and line[:1] not in _INDENT:
                self.open = line.rstrip().endswith(b":")
                return
            if brk < 0:
                return
            end = brk


def _scan(buf: bytes, into: dict[str, float], listing: _Listing) -> None:
    done = 0
    for match in _METRIC_LINE.finditer(buf):
        listing.update(buf[done : match.start()])
        done = match.end()
        indented = buf[match.start() + 1 : match.start() + 2] in (b" ", b"\t")
        if indented and listing.open:
            continue  # an entry of a listing such as "Parameter counts:"
        if not indented:
            listing.open = False  # a metric line is no heading
        name = match.group(1).decode("ascii")
        into[name] = float(match.group(2))
    listing.update(buf[done:])


def _last_break(buf: bytes) -> int:
    return max(buf.rfind(b"\n"), buf.rfind(b"\r"))


def _first_break(buf: bytes) -> int:
    hits = [i for i in (buf.find(b"\n"), buf.find(b"\r")) if i >= 0]
    return min(hits) if hits else -1


def _parse_chunks(chunks: Iterable[bytes], into: dict[str, float]) -> None:
    # Every buffer handed to _scan starts with a line break and ends with one, which is
    # what the pattern anchors on; the carry keeps the break that precedes the partial line.
    carry = b"\n"
    listing = _Listing()
    skipping = False  # inside an over-long line: ignore bytes up to the next line break
    for chunk in chunks:
        if skipping:
            cut = _first_break(chunk)
            if cut < 0:
                continue
            chunk = chunk[cut:]
            skipping = False
        buf = carry + chunk
        cut = _last_break(buf)
        if cut > 0:
            _scan(buf[: cut + 1], into, listing)
        carry = buf[max(cut, 0) :]
        if len(carry) > _MAX_LINE:
            carry = b""
            skipping = True
            listing.open = False
    if len(carry) > 1 and not skipping:
        _scan(carry + b"\n", into, listing)


def parse_metric_lines(text: str) -> dict[str, float]:
    """Every metric line in `text`, the last value of each name winning."""
    found: dict[str, float] = {}
    _parse_chunks([text.encode("utf-8", errors="replace")], found)
    return found


def _read_chunks(path: Path) -> Iterable[bytes]:
    try:
        with path.open("rb") as fh:
            while chunk := fh.read(_CHUNK):
                yield chunk
    except FileNotFoundError:
        return


def read_metrics(*paths: Path) -> dict[str, float]:
    """Metric lines of the files in order (stdout, then stderr); later values win."""
    found: dict[str, float] = {}
    for path in paths:
        _parse_chunks(_read_chunks(Path(path)), found)
    return found


def primary_value(metrics: dict[str, float], name: str) -> tuple[float | None, str | None]:
    """(value, None) when `name` is present and finite, else (None, a reason for the record)."""
    if name not in metrics:
        return None, f"metric {name!r} not found in the output"
    value = metrics[name]
    if not math.isfinite(value):
        return None, f"metric {name!r} is not finite ({value})"
    return value, None
