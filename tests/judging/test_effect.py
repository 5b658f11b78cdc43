"""The effect size written into kept commits: the gain with the t interval of the test
that decided, `marginal` when it reaches down to no gain."""

from __future__ import annotations

import pytest

from overnight.judging.effect import effect_of
from overnight.judging.rules import Rule, decide


def test_the_interval_is_the_t_interval_of_the_decision() -> None:
    rule = Rule("loss", "minimize", 0.05)
    d = decide(rule, [9.0, 9.2, 9.1], [10.0, 10.2, 10.1], reference_experiment=0)
    e = effect_of(d, (3, 3))
    assert e.gain == pytest.approx(1.0)
    # se = sqrt(0.01/3 * 2), Welch df = 4, t(0.975, 4) = 2.776 (published tables).
    assert e.high - e.gain == pytest.approx(2.776 * (0.02 / 3) ** 0.5, rel=1e-3)
    assert not e.marginal
    line = e.trailer("loss")
    # t = 1 / 0.0816 = 12.2 at df 4: one-sided p = 1.28e-4.
    assert line == ("Overnight-Gain: 1 ± 0.23 loss (95% CI 0.7733 to 1.227; welch, 3 vs 3 runs, "
                    "p = 0.000128)")  # fmt: skip


def test_a_gain_whose_interval_reaches_zero_is_marked_marginal() -> None:
    rule = Rule("loss", "minimize", 0.05)
    d = decide(rule, [9.5, 10.1, 9.7], [10.0, 10.4, 9.9], reference_experiment=0)
    e = effect_of(d, (3, 3))
    assert e.low is not None and e.low < 0 < e.gain
    assert e.marginal and e.trailer("loss").endswith("; marginal)")


def test_the_ratchet_has_no_interval() -> None:
    d = decide(Rule("acc", "maximize"), [0.9], [0.8], reference_experiment=0)
    e = effect_of(d, (1, 1))
    assert e.low is None and e.marginal
    assert e.trailer("acc") == (
        "Overnight-Gain: 0.1 acc (no interval: 1 vs 1 run and no noise estimate; marginal)"
    )
