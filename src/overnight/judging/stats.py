"""Small, dependency-free statistics for the verdict rule.

Only what the judge needs: sample moments, Student's t distribution (through the regularized
incomplete beta function), Welch's one-sided test and a pooled-variance t-test. scipy would
do all of this, but it is a heavy dependency for four formulas; `tests/judging/test_stats.py` checks
the numbers against published tables.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass


def mean(xs: Sequence[float]) -> float:
    return math.fsum(xs) / len(xs)


def variance(xs: Sequence[float]) -> float:
    """Unbiased sample variance (ddof = 1); 0 for fewer than two values."""
    if len(xs) < 2:
        return 0.0
    m = mean(xs)
    return math.fsum((x - m) ** 2 for x in xs) / (len(xs) - 1)


def stdev(xs: Sequence[float]) -> float:
    return math.sqrt(variance(xs))


def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the incomplete beta function (modified Lentz)."""
    tiny, eps = 1e-300, 3e-16
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 400):
        m2 = 2 * m
        aa = m * (b - m) * x / ((qam + m2) * (a + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        h *= d * c
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < eps:
            break
    return h


def betainc(a: float, b: float, x: float) -> float:
    """The regularized incomplete beta function I_x(a, b)."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    log_front = (
        math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    )
    front = math.exp(log_front)
    # The continued fraction converges fast only on one side of the mean; use symmetry.
    if x < (a + 1.0) / (a + b + 2.0):
        return front * _betacf(a, b, x) / a
    return 1.0 - front * _betacf(b, a, 1.0 - x) / b


def t_sf(t: float, df: float) -> float:
    """P(T > t) for Student's t with `df` degrees of freedom (df may be fractional)."""
    if math.isnan(t) or df <= 0:
        return math.nan
    if math.isinf(t):
        return 0.0 if t > 0 else 1.0
    tail = 0.5 * betainc(df / 2.0, 0.5, df / (df + t * t))
    return tail if t > 0 else 1.0 - tail


def t_ppf(p: float, df: float) -> float:
    """The t value with P(T <= t) = p (by bisection on t_sf; only used for messages/docs)."""
    lo, hi = -1e3, 1e3
    for _ in range(200):
        mid = (lo + hi) / 2
        if 1.0 - t_sf(mid, df) < p:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


@dataclass(frozen=True)
class TTest:
    """A one-sided test of H1: the true difference exceeds `margin`."""

    diff: float  # observed difference of means (positive = in the tested direction)
    se: float  # standard error of `diff`
    df: float
    t: float
    p: float  # one-sided p-value of H0: true difference <= margin

    def p_below(self, margin: float = 0.0) -> float:
        """One-sided p-value of the other direction: H1: true difference < `margin`."""
        if self.se == 0:
            return 0.0 if self.diff < margin else 1.0
        return t_sf((margin - self.diff) / self.se, self.df)


def _test(diff: float, se: float, df: float, margin: float) -> TTest:
    if se == 0:
        # No noise was observed at all: the difference is exact.
        t = math.inf if diff > margin else -math.inf if diff < margin else 0.0
        return TTest(diff, 0.0, df, t, 0.0 if diff > margin else 1.0)
    t = (diff - margin) / se
    return TTest(diff, se, df, t, t_sf(t, df))


def welch(a: Sequence[float], b: Sequence[float], margin: float = 0.0) -> TTest:
    """Welch's unequal-variance test of H1: mean(a) - mean(b) > margin (each n >= 2)."""
    if len(a) < 2 or len(b) < 2:
        raise ValueError("Welch's test needs at least two values per group")
    va, vb = variance(a) / len(a), variance(b) / len(b)
    se = math.sqrt(va + vb)
    if se == 0:
        df = float(len(a) + len(b) - 2)
    else:
        # Welch–Satterthwaite degrees of freedom.
        df = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))
    return _test(mean(a) - mean(b), se, df, margin)


@dataclass(frozen=True)
class Noise:
    """A pooled estimate of one run's standard deviation."""

    sd: float
    df: int

    def as_dict(self) -> dict[str, float]:
        return {"sd": self.sd, "df": self.df}


def pooled_noise(groups: Iterable[Sequence[float]]) -> Noise | None:
    """The pooled standard deviation of groups of repeated measurements of the same thing
    (groups of one value carry no information about noise), or None without any."""
    ss, df = 0.0, 0
    for g in groups:
        if len(g) >= 2:
            ss += variance(g) * (len(g) - 1)
            df += len(g) - 1
    return Noise(math.sqrt(ss / df), df) if df > 0 else None


def pooled_t(a: Sequence[float], b: Sequence[float], noise: Noise, margin: float = 0.0) -> TTest:
    """A t-test of H1: mean(a) - mean(b) > margin with a known-from-elsewhere pooled sd."""
    se = noise.sd * math.sqrt(1.0 / len(a) + 1.0 / len(b))
    return _test(mean(a) - mean(b), se, float(noise.df), margin)


def _beta_ppf(q: float, a: float, b: float) -> float:
    """x with I_x(a, b) = q, by bisection (I is increasing in x)."""
    lo, hi = 0.0, 1.0
    for _ in range(80):
        mid = (lo + hi) / 2
        if betainc(a, b, mid) < q:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


def clopper_pearson(k: int, n: int, level: float = 0.95) -> tuple[float, float]:
    """The exact (Clopper–Pearson) confidence interval of a proportion, `k` of `n`: its
    coverage is at least `level` whatever the true proportion, also for a handful of trials."""
    if n <= 0 or not 0 <= k <= n:
        raise ValueError(f"expected 0 <= k <= n and n > 0, got k = {k}, n = {n}")
    tail = (1.0 - level) / 2
    lo = 0.0 if k == 0 else _beta_ppf(tail, k, n - k + 1)
    hi = 1.0 if k == n else _beta_ppf(1.0 - tail, k + 1, n - k)
    return lo, hi
