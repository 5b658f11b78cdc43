"""Implausibility sentinels: a would-be keep that looks too good to be an honest change is
held as `suspect` for the morning review, with the evidence, instead of being kept.

- **Too fast:** its runs took less than `[judge] wall_ratio` of the baseline's time, for a
  metric that is not itself a time (a run that skipped its work and still printed a good
  number: an early exit, a cached answer, a metric written by something else).
- **Too large a jump:** its gain over the best exceeds `[judge] max_jump`.

Pure functions of stored numbers, so `overnight verify` reaches the same verdict.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from overnight.judging.rules import Decision, Verdict
from overnight.judging.stats import mean

# Name parts that say a metric is a time (or a rate per time): a faster run is then the
# point, not a warning sign. Whole parts only ("ms" in "val_ms", not in "items").
_TIME_PARTS = {
    "s", "sec", "secs", "second", "seconds", "ms", "us", "ns", "minutes", "hours",
    "latency", "duration", "elapsed", "speed", "speedup", "throughput", "qps", "fps", "rps",
    "tps", "wall", "hz",
}  # fmt: skip
HELD = "held for the morning review"


def is_time_metric(name: str) -> bool:
    """Whether the metric `name` measures time (seconds, latency, throughput, ...)."""
    parts = [p for p in re.split(r"[^a-z]+", name.lower()) if p]
    return any(p in _TIME_PARTS or "time" in p or "latency" in p for p in parts)


@dataclass
class SentinelRecord:
    """What the sentinels compared, stored with the verdict (`overnight verify` replays it)."""

    wall_ratio: float = 0.0  # 0: the wall-time sentinel was off (or the metric is a time)
    baseline_ids: list[int] = field(default_factory=list)  # the baseline's run measurements
    max_jump: float = 0.0  # in the metric's units; 0: no bound


def check(
    s: SentinelRecord, first: Decision, name: str, candidate_walls: Sequence[float],
    baseline_walls: Sequence[float],
) -> Verdict | None:  # fmt: skip
    """The `suspect` verdict of a would-be keep decided by `first`, or None when it looks
    plausible. Walls are the wall times of the candidate's and the baseline's runs."""
    if s.wall_ratio > 0 and candidate_walls and baseline_walls:
        cand, base = mean(candidate_walls), mean(baseline_walls)
        if base > 0 and cand < s.wall_ratio * base:
            return Verdict("suspect", (
                f"{first.reason}; but its runs took {cand:.3g} s, {cand / base:.1%} of the "
                f"baseline's {base:.3g} s, for a metric that is not a time ([judge] wall_ratio "
                f"= {s.wall_ratio:g}): {HELD}"))  # fmt: skip
    if s.max_jump > 0 and first.gain > s.max_jump:
        return Verdict("suspect", (
            f"{first.reason}; but a gain of {first.gain:.4g} {name} is more than [judge] "
            f"max_jump ({s.max_jump:.4g}) allows: {HELD}"))  # fmt: skip
    return None
