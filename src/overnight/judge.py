"""Verdict rules. Pure functions of numbers: the judge never touches git or the ledger,
so `overnight verify` can recompute every verdict from stored values."""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class Verdict:
    status: str
    reason: str


def fmt(value: float | None) -> str:
    return "—" if value is None else f"{value:.6g}"


def gain(value: float, best: float, goal: str) -> float:
    """How much better `value` is than `best` (positive = better) in the metric's units."""
    return best - value if goal == "minimize" else value - best


def describe_change(name: str, value: float, best: float, goal: str) -> str:
    delta = value - best
    rel = f", {delta / abs(best) * 100:+.2f}%" if best else ""
    return f"{name} {fmt(best)} → {fmt(value)} ({delta:+.4g}{rel})"


def greedy(
    *,
    name: str,
    goal: str,
    value: float,
    best: float,
    best_experiment: int,
    threshold: float = 0.0,
) -> Verdict:
    """The autoresearch ratchet: keep when strictly better than the best by more than
    `threshold` (already converted to the metric's units)."""
    if not math.isfinite(value):
        return Verdict("crash", f"metric {name!r} is not finite ({value})")
    change = describe_change(name, value, best, goal)
    g = gain(value, best, goal)
    if g > threshold and g > 0:
        return Verdict("keep", f"{change}: better than experiment {best_experiment}")
    if threshold > 0 and g > 0:
        return Verdict(
            "discard",
            f"{change}: improvement {g:.4g} is below min_improvement {threshold:.4g}",
        )
    return Verdict("discard", f"{change}: not better than experiment {best_experiment}")
