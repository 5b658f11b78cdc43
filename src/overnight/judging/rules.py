"""Verdict rules. Pure functions of numbers: the judge never touches git or the ledger,
so `overnight verify` can recompute every verdict from stored values.

The rule (docs/trust.md has the reasoning and the measured error rates):

1. candidate and reference both have >= 2 values: Welch's one-sided t-test of
   H0: true gain <= min_improvement; keep when p < alpha.
2. otherwise, when a pooled noise estimate with >= MIN_NOISE_DF degrees of freedom exists
   (from these values and earlier repeated measurements): the same one-sided t-test with
   that standard deviation.
3. otherwise (repeats = 1, no noise known): the autoresearch ratchet, keep when the gain
   exceeds min_improvement.
`prefer_simpler`: a candidate not kept by the rule is kept when its surface is shorter and
it is not worse within noise (not significantly worse at alpha; with the ratchet: gain >= 0).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from overnight.judging.stats import Noise, TTest, mean, pooled_noise, pooled_t, welch

# A pooled noise estimate with fewer degrees of freedom is too unreliable to judge by
# (t's critical value at df = 3 is 2.35, at df = 1 it is 6.3): fall back to the ratchet.
MIN_NOISE_DF = 4


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


# == the noise-aware rule ==================================================================


@dataclass(frozen=True)
class Rule:
    """The parameters of one decision; stored with it so `verify` can replay it."""

    name: str
    goal: str
    alpha: float = 0.05
    threshold: float = 0.0  # min_improvement in the metric's units (relative ones resolved)
    prefer_simpler: bool = False

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Rule:
        return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})


@dataclass(frozen=True)
class Decision:
    status: str  # "keep" | "discard"
    reason: str
    kind: str  # "improvement", "simpler" or "" (discard)
    method: str  # "welch", "pooled" or "greedy"
    gain: float  # mean gain over the reference, in the metric's units (positive = better)
    p: float | None  # one-sided p-value of "no real improvement" (None for the ratchet)
    se: float | None = None  # standard error of `gain` (None for the ratchet)
    df: float | None = None  # its degrees of freedom

    @property
    def verdict(self) -> Verdict:
        return Verdict(self.status, self.reason)


def _combine(a: Noise | None, b: Noise | None) -> Noise | None:
    if a is None or b is None:
        return a or b
    df = a.df + b.df
    return Noise(math.sqrt((a.sd**2 * a.df + b.sd**2 * b.df) / df), df)


def _signed(values: Sequence[float], goal: str) -> list[float]:
    # Work in "bigger is better" units so one one-sided test serves both goals.
    return list(values) if goal == "maximize" else [-v for v in values]


def _test(
    rule: Rule, cand: Sequence[float], ref: Sequence[float], noise: Noise | None
) -> tuple[str, TTest | None]:
    c, r = _signed(cand, rule.goal), _signed(ref, rule.goal)
    if len(c) >= 2 and len(r) >= 2:
        return "welch", welch(c, r, rule.threshold)
    pooled = _combine(pooled_noise([cand, ref]), noise)
    if pooled is not None and pooled.df >= MIN_NOISE_DF:
        return "pooled", pooled_t(c, r, pooled, rule.threshold)
    return "greedy", None


def _runs(cand: Sequence[float], ref: Sequence[float]) -> str:
    return f"{len(cand)} vs {len(ref)} run{'s' if len(ref) > 1 else ''}"


def decide(
    rule: Rule,
    candidate: Sequence[float],
    reference: Sequence[float],
    *,
    reference_experiment: int,
    noise: Noise | None = None,
    sizes: tuple[int, int] | None = None,
) -> Decision:
    """Keep or discard `candidate` (its measured values) against `reference` (the best's).

    `noise`: a pooled estimate from earlier repeated measurements, used only when one side
    has a single value. `sizes`: (reference, candidate) surface sizes for `prefer_simpler`.
    """
    if not candidate or not reference:
        raise ValueError("decide needs at least one candidate and one reference value")
    cm, rm = mean(candidate), mean(reference)
    g = gain(cm, rm, rule.goal)
    change = describe_change(rule.name, cm, rm, rule.goal)
    method, test = _test(rule, candidate, reference, noise)
    best = f"experiment {reference_experiment}"
    below = f" by more than min_improvement {rule.threshold:.4g}" if rule.threshold > 0 else ""
    if test is None:
        better = g > rule.threshold and g > 0
        not_worse = g >= 0
        stats = ""
    else:
        better = test.p < rule.alpha
        # "Not worse within noise": the data do not show it worse at the same alpha.
        not_worse = test.p_below(0.0) >= rule.alpha
        stats = f" (Welch t = {test.t:.3g}" if method == "welch" else f" (t = {test.t:.3g}"
        stats += f", p = {test.p:.3g}, α = {rule.alpha:g}, {_runs(candidate, reference)})"
    p = None if test is None else test.p
    se, df = (None, None) if test is None else (test.se, test.df)
    if better:
        return Decision("keep", f"{change}: better than {best}{below}{stats}", "improvement",
                        method, g, p, se, df)  # fmt: skip
    simpler = sizes is not None and sizes[1] < sizes[0]
    if rule.prefer_simpler and simpler and not_worse:
        assert sizes is not None
        return Decision(
            "keep",
            f"{change}: simpler ({sizes[0]} → {sizes[1]} lines) and not worse than {best} "
            f"within noise{stats}",
            "simpler", method, g, p, se, df,
        )  # fmt: skip
    if test is None:
        v = greedy(name=rule.name, goal=rule.goal, value=cm, best=rm,
                   best_experiment=reference_experiment, threshold=rule.threshold)  # fmt: skip
        return Decision(v.status, v.reason, "", method, g, p)
    return Decision("discard", f"{change}: not significantly better than {best}{below}{stats}",
                    "", method, g, p, se, df)  # fmt: skip


def confirms(first: Decision, again: Decision) -> bool:
    """Whether a confirming re-run holds: a keep for the same reason as the first."""
    return again.status == "keep" and (again.kind == first.kind or again.kind == "improvement")


def holdout_regressed(value: float, best: float, goal: str, tolerance: float) -> bool:
    """Whether the holdout got worse than the best's by more than `tolerance`."""
    return gain(value, best, goal) < -tolerance


def surface_size(files: dict[str, str]) -> int:
    """The size `prefer_simpler` compares: non-blank lines over the surface files."""
    return sum(1 for text in files.values() for line in text.splitlines() if line.strip())
