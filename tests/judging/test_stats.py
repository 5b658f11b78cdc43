"""The statistics behind the verdict rule, against published tables and textbook examples."""

from __future__ import annotations

import math

import pytest

from overnight.judging.stats import (
    Noise,
    betainc,
    mean,
    pooled_noise,
    pooled_t,
    stdev,
    t_ppf,
    t_sf,
    variance,
    welch,
)

# One-sided 95% and 99% critical values of Student's t (any statistics textbook's table).
T_TABLE = [
    (1, 6.314, 31.821),
    (2, 2.920, 6.965),
    (4, 2.132, 3.747),
    (5, 2.015, 3.365),
    (8, 1.860, 2.896),
    (10, 1.812, 2.764),
    (30, 1.697, 2.457),
]


@pytest.mark.parametrize(("df", "t95", "t99"), T_TABLE)
def test_t_distribution_matches_the_table(df: int, t95: float, t99: float) -> None:
    assert t_sf(t95, df) == pytest.approx(0.05, abs=2e-4)
    assert t_sf(t99, df) == pytest.approx(0.01, abs=1e-4)
    assert t_ppf(0.95, df) == pytest.approx(t95, abs=2e-3)
    assert t_sf(-t95, df) == pytest.approx(0.95, abs=2e-4)


def test_t_distribution_edges() -> None:
    assert t_sf(0.0, 3) == 0.5
    assert t_sf(math.inf, 3) == 0.0 and t_sf(-math.inf, 3) == 1.0
    assert math.isnan(t_sf(math.nan, 3))
    # Large df approaches the normal distribution: P(Z > 1.6449) = 0.05.
    assert t_sf(1.6449, 1e6) == pytest.approx(0.05, abs=1e-4)
    # Fractional degrees of freedom (Welch) interpolate between the integers.
    assert t_sf(2.0, 5) < t_sf(2.0, 4.5) < t_sf(2.0, 4)


def test_incomplete_beta_known_values() -> None:
    assert betainc(1, 1, 0.3) == pytest.approx(0.3)  # uniform
    assert betainc(2, 3, 0.4) == pytest.approx(0.5248, abs=1e-4)
    assert betainc(0.5, 0.5, 0.5) == pytest.approx(0.5)
    assert betainc(2, 2, 0) == 0 and betainc(2, 2, 1) == 1


def test_moments() -> None:
    xs = [2.0, 4.0, 4.0, 4.0, 5.0, 5.0, 7.0, 9.0]
    assert mean(xs) == 5.0
    assert variance(xs) == pytest.approx(32 / 7)
    assert stdev([3.0]) == 0.0


def test_welch_textbook_example() -> None:
    # Welch's t-test, Wikipedia "Welch's t-test" example 1: t = -2.46, df = 24.9.
    a = [27.5, 21.0, 19.0, 23.6, 17.0, 17.9, 16.9, 20.1, 21.9, 22.6, 23.1, 19.6, 19.0, 21.7, 21.4]
    b = [27.1, 22.0, 20.8, 23.4, 23.4, 23.5, 25.8, 22.0, 24.8, 20.2, 21.9, 22.1, 22.9, 20.5, 24.4]
    r = welch(a, b)
    assert r.t == pytest.approx(-2.46, abs=0.01)
    assert r.df == pytest.approx(24.9, abs=0.1)
    assert 2 * r.p_below(0.0) == pytest.approx(0.021, abs=1e-3)  # two-sided p
    assert r.p == pytest.approx(1 - r.p_below(0.0))
    with pytest.raises(ValueError):
        welch([1.0], [1.0, 2.0])


def test_welch_without_noise_is_exact() -> None:
    assert welch([5.0, 5.0], [4.0, 4.0]).p == 0.0
    assert welch([4.0, 4.0], [4.0, 4.0]).p == 1.0
    assert welch([4.0, 4.0], [5.0, 5.0]).p_below(0.0) == 0.0


def test_pooled_noise_and_t() -> None:
    assert pooled_noise([[1.0], [2.0]]) is None
    noise = pooled_noise([[1.0, 3.0], [10.0, 12.0, 14.0], [7.0]])
    assert noise is not None and noise.df == 3
    assert noise.sd == pytest.approx(math.sqrt((2 + 8) / 3))
    r = pooled_t([5.0], [2.0], Noise(1.0, 10))
    assert r.t == pytest.approx(3 / math.sqrt(2)) and r.df == 10
