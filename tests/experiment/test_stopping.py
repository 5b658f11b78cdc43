"""The circuit breakers and limits of an unattended night (experiment/stopping.py), fed
experiment records as the loop feeds them."""

from __future__ import annotations

import random

import pytest

from overnight.config import StopConfig
from overnight.experiment.loop import RunOptions
from overnight.experiment.scheduler import Tally
from overnight.experiment.stopping import Breakers, limit_reached, remaining, signature
from overnight.proposers.base import NOTHING_TO_PROPOSE
from overnight.store.records import ExperimentRecord


def rec(n: int, status: str, reason: str = "", meta: dict | None = None) -> ExperimentRecord:
    return ExperimentRecord(n, status, None, {}, None, None, f"change {n}", reason, 1.0, "p",
                            meta=meta or {})  # fmt: skip


def feed(breakers: Breakers, records: list[ExperimentRecord]) -> int | None:
    """The experiment at which the breakers tripped (None: they never did)."""
    for r in records:
        if breakers.observe(r):
            return r.experiment
    return None


def test_signature_ignores_numbers_paths_and_ids() -> None:
    a = signature("crash", "run command exited with code 1: No such file /tmp/a1/x.csv at 0.91")
    b = signature("crash", "run command exited with code 2: No such file /var/tmp/q/y.csv at 3")
    assert a == b
    assert signature("invalid", "duplicate of experiment 12") == signature(
        "invalid", "duplicate of experiment 7"
    )
    ids = [signature("invalid", f"conflict in {c}") for c in ("3f9a2c1d0e", "ab12cd3")]
    assert ids[0] == ids[1]
    assert signature("crash", "KeyError: 'lr'") != signature("crash", "KeyError: 'wd'")
    assert signature("crash", "exit 1") != signature("timeout", "exit 1")


def test_nothing_to_propose_stops_at_once_with_the_proposers_reason() -> None:
    b = Breakers(StopConfig())
    why = b.observe(rec(1, "invalid", "declare knobs like LR = 0.1", {NOTHING_TO_PROPOSE: True}))
    assert why is not None and "propose nothing" in why and "declare knobs like LR" in why


def test_the_same_failure_k_times_in_a_row() -> None:
    b = Breakers(StopConfig(max_same_failure=5, max_failures_in_row=10))
    same = [rec(n, "invalid", f"the agent exited with code 1: error: unknown option '--x{n}'")
            for n in range(1, 20)]  # fmt: skip
    # Option names differ only in their number: the same failure.
    assert feed(b, same) == 5
    assert "the last 5 experiments failed the same way" in (b.tripped or "")
    assert "[proposer]" in (b.tripped or "")  # what to fix: the proposer itself fails


def test_a_success_resets_the_streaks() -> None:
    b = Breakers(StopConfig(max_same_failure=3, max_failures_in_row=4, failure_window=0))
    records = [rec(1, "crash", "boom"), rec(2, "crash", "boom"), rec(3, "discard"),
               rec(4, "crash", "boom"), rec(5, "crash", "boom"), rec(6, "keep"),
               rec(7, "crash", "a"), rec(8, "timeout", "b"), rec(9, "discard")]  # fmt: skip
    assert feed(b, records) is None


def test_n_different_failures_in_a_row() -> None:
    b = Breakers(StopConfig(max_failures_in_row=10, max_same_failure=5, failure_window=0))
    kinds = ["crash", "timeout", "invalid", "rejected"]
    records = [rec(n, kinds[n % 4], f"reason kind {chr(97 + n)}") for n in range(1, 30)]
    assert feed(b, records) == 10
    assert b.tripped is not None and b.tripped.startswith("10 experiments in a row failed")
    assert "crash 2" in b.tripped and "overnight show 10" in b.tripped


def test_failure_share_over_the_window() -> None:
    b = Breakers(StopConfig(max_failures_in_row=0, max_same_failure=0, failure_window=20,
                            max_failure_share=0.8))  # fmt: skip
    # 4 failures, then one discard, over and over: never 5 in a row, but 80% of the window.
    records = [rec(n, "discard" if n % 5 == 0 else "crash", f"e{chr(97 + n % 26)}")
               for n in range(1, 100)]  # fmt: skip
    assert feed(b, records) == 21  # judged on a failure: the first one once the window is full
    assert "16 of the last 20 experiments failed" in (b.tripped or "")


def test_keys_set_to_zero_turn_breakers_off() -> None:
    b = Breakers(StopConfig(max_failures_in_row=0, max_same_failure=0, failure_window=0))
    assert feed(b, [rec(n, "crash", "same") for n in range(1, 200)]) is None


def test_a_healthy_night_never_trips_the_defaults() -> None:
    """A model proposer on a hard problem: 30% of experiments fail in a varied way, the rest
    are measured. 2,000 experiments (more than a night at any realistic budget) with the
    default [stop] keys, 10 seeds: never stopped. (10 failures in a row by chance needs a
    failure rate near 40%: 0.4^10 is 1e-4 per experiment.)"""
    reasons = ["unusable edit, nothing applied: SEARCH block not found", "exit 1: NaN loss",
               "killed at the budget of 300s", "duplicate of experiment 3",
               "changed files outside the surface: data.py"]  # fmt: skip
    statuses = ["invalid", "crash", "timeout", "invalid", "rejected"]
    for seed in range(10):
        rng = random.Random(seed)
        records = []
        for n in range(1, 2001):
            if rng.random() < 0.3:
                k = rng.randrange(len(reasons))
                records.append(rec(n, statuses[k], reasons[k]))
            else:
                records.append(rec(n, rng.choice(["discard", "discard", "keep"])))
        assert feed(Breakers(StopConfig()), records) is None, seed


def test_the_baseline_and_undecided_records_are_not_counted() -> None:
    b = Breakers(StopConfig(max_failures_in_row=1))
    assert b.observe(rec(0, "keep")) is None
    assert b.observe(ExperimentRecord(3, None, None, {}, None, None, "", "", None, "")) is None
    assert b.observe(rec(4, "crash", "x")) is not None


@pytest.mark.parametrize(
    ("opts", "tally", "elapsed", "spent", "expected"),
    [
        (RunOptions(experiments=3), Tally(started=3), 0, 0, "ran 3 experiment(s) as asked"),
        (RunOptions(hours=1), Tally(), 3600, 0, "time limit of 1 h reached"),
        (RunOptions(patience=2), Tally(streak=2), 0, 0, "patience 2"),
        (RunOptions(max_cost=1.0), Tally(), 0, 1.0, "cost limit reached"),
        (RunOptions(experiments=3, hours=1, patience=5), Tally(started=2, streak=4), 10, 0,
         None),
    ],
)  # fmt: skip
def test_limits(opts: RunOptions, tally: Tally, elapsed: float, spent: float,
                expected: str | None) -> None:  # fmt: skip
    why = limit_reached(opts, tally, elapsed, spent, None)
    assert (why is None) if expected is None else (expected in (why or ""))


def test_cost_limit_stops_before_a_call_that_could_cross_it() -> None:
    why = limit_reached(RunOptions(max_cost=1.0), Tally(), 0, 0.9, lambda: 0.2)
    assert why is not None and "could cost up to $0.20" in why


def test_remaining_says_what_is_left_of_each_limit() -> None:
    left = remaining(RunOptions(experiments=10, hours=2, max_cost=5.0), Tally(started=4),
                     1800, 1.25)  # fmt: skip
    assert (left.experiments, left.seconds, left.usd) == (6, 5400, 3.75)
    assert left.describe() == "left in this run: 1.5 h, 6 experiment(s), $3.75 of model spend"
    assert remaining(RunOptions(), Tally(), 5, 0).describe() == ""


@pytest.mark.parametrize(
    ("status", "reason", "points_at"),
    [
        ("crash", "run command exited with code 1: KeyError", "overnight show 7"),
        ("timeout", "killed at the budget of 60s", "[study].budget"),
        ("invalid", "[check] failed (exit 1): 2 tests failed", "[check].command"),
        ("invalid", "model call failed after 5 attempt(s): 401", "[proposer]"),
        ("invalid", "tune found no untried knob values in 20 attempts", "add knobs"),
        ("invalid", "unusable edit, nothing applied: SEARCH not found", "--prompt"),
        ("rejected", "changed files outside the surface: eval.py", "overnight show 7"),
    ],
)  # fmt: skip
def test_the_reason_says_what_to_fix(status: str, reason: str, points_at: str) -> None:
    b = Breakers(StopConfig(max_same_failure=1))
    why = b.observe(rec(7, status, reason))
    assert why is not None and reason in why and points_at in why

