"""The effect size of a keep: its measured gain with a confidence interval, written into
the kept commit (trailer `Overnight-Gain:`), so `git log` of the study branch tells a
clear gain from a marginal one."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from overnight.judging.rules import Decision
from overnight.judging.stats import t_ppf

GAIN_TRAILER = "Overnight-Gain"
LEVEL = 0.95


@dataclass(frozen=True)
class Effect:
    gain: float  # mean gain over the best it replaced, metric units, positive = better
    low: float | None  # the confidence interval of the gain (None: no noise estimate)
    high: float | None
    level: float
    method: str  # "welch", "pooled" or "greedy"
    p: float | None
    runs: tuple[int, int]  # (candidate, reference) runs compared

    @property
    def marginal(self) -> bool:
        """Whether the interval reaches down to no gain at all."""
        return self.low is None or self.low <= 0

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "runs": list(self.runs), "marginal": self.marginal}

    def trailer(self, metric: str) -> str:
        """`Overnight-Gain: 0.52 ± 0.11 val_loss (95% CI 0.41 to 0.63; welch, 3 vs 3 runs,
        p = 0.003)`: positive is better whatever the goal."""
        runs = f"{self.runs[0]} vs {self.runs[1]} run{'s' if self.runs[1] != 1 else ''}"
        if self.low is None or self.high is None:
            detail = f"no interval: {runs} and no noise estimate"
            return f"{GAIN_TRAILER}: {self.gain:.4g} {metric} ({detail}; marginal)"
        half = (self.high - self.low) / 2
        p = f", p = {self.p:.3g}" if self.p is not None else ""
        flag = "; marginal" if self.marginal else ""
        return (f"{GAIN_TRAILER}: {self.gain:.4g} ± {half:.2g} {metric} ({self.level:.0%} CI "
                f"{self.low:.4g} to {self.high:.4g}; {self.method}, {runs}{p}{flag})")  # fmt: skip


def effect_of(d: Decision, runs: tuple[int, int], level: float = LEVEL) -> Effect:
    """The gain `d` measured, with its two-sided `level` confidence interval from the same
    t distribution the decision used."""
    low = high = None
    if d.se is not None and d.df is not None:
        half = 0.0 if d.se == 0 else t_ppf(1 - (1 - level) / 2, d.df) * d.se
        low, high = d.gain - half, d.gain + half
    return Effect(d.gain, low, high, level, d.method, d.p, runs)
