"""Metric lines: `name: number` or `name=number` alone on a line (optional `METRIC ` prefix).

The last occurrence of a name wins. Every metric other than the study's primary one is a
secondary metric; the caller decides which is which.
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

# Reading in chunks keeps memory bounded however much a run prints; the regex scans each
# chunk at C speed instead of a Python loop per line.
_CHUNK = 1 << 20
# No metric line is this long, so a longer line (a progress bar without newlines, a dumped
# tensor) is skipped instead of being buffered whole.
_MAX_LINE = 1 << 16


def _scan(buf: bytes, into: dict[str, float]) -> None:
    for match in _METRIC_LINE.finditer(buf):
        name = match.group(1).decode("ascii")
        into[name] = float(match.group(2))


def _last_break(buf: bytes) -> int:
    return max(buf.rfind(b"\n"), buf.rfind(b"\r"))


def _first_break(buf: bytes) -> int:
    hits = [i for i in (buf.find(b"\n"), buf.find(b"\r")) if i >= 0]
    return min(hits) if hits else -1


def _parse_chunks(chunks: Iterable[bytes], into: dict[str, float]) -> None:
    # Every buffer handed to _scan starts with a line break and ends with one, which is
    # what the pattern anchors on; the carry keeps the break that precedes the partial line.
    carry = b"\n"
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
            _scan(buf[: cut + 1], into)
        carry = buf[max(cut, 0) :]
        if len(carry) > _MAX_LINE:
            carry = b""
            skipping = True
    if len(carry) > 1 and not skipping:
        _scan(carry + b"\n", into)


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
