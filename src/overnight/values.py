"""Values a user writes in the config or on the command line: durations ("1h30m"), sizes
("512M"), amounts in the metric's units or relative to a value ("0.5%"), and path globs
matched per segment as in .gitignore."""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from fnmatch import fnmatchcase
from typing import Any

DURATION_HINT = "expected a duration like '90s', '5m' or '1h30m'"
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_DURATION = re.compile(r"(?:\s*\d+(?:\.\d+)?\s*(?:ms|s|m|h|d)\s*)+", re.IGNORECASE)
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)", re.IGNORECASE)
_SIZE_PARTS = re.compile(r"^(\d+(?:\.\d+)?)\s*([kmgt]?)i?b?$", re.IGNORECASE)


def parse_duration(value: str | int | float) -> float:
    """Seconds in `value`: a bare number of seconds or a string like "90s", "5m", "1h30m"."""
    seconds = math.nan
    if isinstance(value, int | float) and not isinstance(value, bool):
        seconds = float(value)
    elif isinstance(value, str):
        text = value.strip()
        if re.fullmatch(r"\d+(\.\d+)?", text):
            seconds = float(text)
        elif _DURATION.fullmatch(text):
            seconds = sum(
                float(n) * _UNIT_SECONDS[u.lower()] for n, u in _DURATION_PART.findall(text)
            )
    if not math.isfinite(seconds) or seconds <= 0:
        raise ValueError(DURATION_HINT)
    return seconds


def parse_size(text: str) -> int:
    """Bytes in "512M", "8G", "1.5g", "100000" (binary units)."""
    match = _SIZE_PARTS.match(text.strip())
    if not match:
        raise ValueError(f"not a size: {text!r}")
    power = " kmgt".index(match.group(2).lower() or " ")
    return int(float(match.group(1)) * 1024**power)


def normalize_pattern(pattern: str) -> str:
    pattern = pattern.strip()
    while pattern.startswith("./"):
        pattern = pattern[2:]
    return pattern.rstrip("/")


def _match_parts(pattern: list[str], parts: list[str]) -> bool:
    # Matching a leading run of directories is enough: a directory covers what is below it.
    if not pattern:
        return True
    if pattern[0] == "**":
        return any(_match_parts(pattern[1:], parts[i:]) for i in range(len(parts) + 1))
    return (
        bool(parts) and fnmatchcase(parts[0], pattern[0]) and _match_parts(pattern[1:], parts[1:])
    )


def match_any(path: str, patterns: Iterable[str]) -> bool:
    """Whether repo-relative `path` matches a glob, per path segment (`*` stays inside one
    directory, `**` spans any number), or lies below a matching directory, as in .gitignore."""
    parts = normalize_pattern(path).split("/")
    return any(_match_parts(normalize_pattern(p).split("/"), parts) for p in patterns if p.strip())


def parse_amount(value: Any) -> float | str:
    """An amount in the metric's units (a number >= 0) or relative to a value ("0.5%")."""
    hint = 'expected a number >= 0 or a percentage like "0.5%"'
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValueError(hint)
    text = str(value).strip()
    number = text.removesuffix("%").strip()
    try:
        amount = float(number)
    except ValueError:
        raise ValueError(hint) from None
    if not math.isfinite(amount) or amount < 0:
        raise ValueError(hint)
    return f"{number}%" if text.endswith("%") else amount


def in_units(amount: float | str, reference: float) -> float:
    """`amount` (see `parse_amount`) in the metric's units, a percentage taken of `reference`."""
    if isinstance(amount, str):
        return float(amount[:-1]) / 100.0 * abs(reference)
    return float(amount)
