"""Controls (`[judge] controls = K`): the unchanged best resubmitted blind, judged like any
candidate, never kept; the share the rule would have kept is the night's false-keep rate.

In-process studies (real git and ledger, the loop and pipeline, runs played by the
FakeExecutor with seeded noise): deterministic, no processes, no timing."""

from __future__ import annotations

import json
import random
from pathlib import Path

from conftest import git
from support.inprocess import make_study, noisy, run_study, study_toml, x_of

from overnight.executors.base import RunTask
from overnight.executors.fake import FakeRun
from overnight.judging.replay import verify_ledger
from overnight.judging.rules import Rule, decide
from overnight.store.ledger import Ledger
from overnight.store.study import Study

CONTROLS = "\n[judge]\ncontrols = 2\n"


def controls_of(study: Study) -> list[dict]:
    ledger = study.open_ledger()
    try:
        return [{"n": r.experiment, "status": r.status, "of": r.control_of, "commit": r.commit,
                 "parent": r.parent, "reason": r.reason, "meta": r.meta}
                for r in ledger.records() if r.control_of is not None]  # fmt: skip
    finally:
        ledger.close()


def test_controls_are_blind_real_commits_that_never_reach_the_branch(tmp_path: Path) -> None:
    study = make_study(tmp_path / "repo", study_toml("repeats = 2\n", CONTROLS))
    behave = noisy(0.5)
    seen: list[RunTask] = []

    def spy(task: RunTask, files: dict[str, str]) -> FakeRun:
        seen.append(task)
        return behave(task, files)

    loop, summary = run_study(study, spy, 12)
    assert summary.ran == 12
    ctl = controls_of(study)
    # One in every block of two, at a random place in the block.
    assert len(ctl) == 6
    numbers = [c["n"] for c in ctl]
    assert numbers != list(range(numbers[0], numbers[0] + 12, 2))
    branch = git(study.root, "rev-list", f"overnight/{study.name}").split()
    kept = {r.experiment: r for r in study.log() if r.status == "keep"}
    for c in ctl:
        assert c["status"] != "keep" and c["reason"].startswith("control (the unchanged best")
        best = kept[c["of"]]
        # A real commit of its own: the best's tree, on the best's parent (or, for the
        # baseline, on the baseline), never on the branch, reachable at its ref.
        assert c["commit"] not in branch and c["commit"] != best.commit
        tree = git(study.root, "rev-parse", f"{c['commit']}^{{tree}}")
        assert tree == git(study.root, "rev-parse", f"{best.commit}^{{tree}}")
        assert c["parent"] == (best.parent or best.commit)
        assert git(study.root, "rev-parse", f"{c['commit']}^") == c["parent"]
        ref = f"refs/overnight/{study.name}/{c['n']}"
        assert git(study.root, "rev-parse", ref) == c["commit"]
        # Its message is the best's, with its own number: nothing says "control".
        message = git(study.root, "log", "-1", "--format=%B", c["commit"])
        assert message == f"{best.description}\n\nOvernight-Experiment: {c['n']}"
        # Measured like any candidate: same runs, same environment keys.
        runs = [t for t in seen if t.experiment == c["n"] and t.kind == "run"]
        assert [t.repeat for t in runs] == [0, 1]
        assert runs[0].env["OVERNIGHT_EXPERIMENT"] == str(c["n"])
    # The proposer never saw a control: not in its history, never observed.
    assert not set(numbers) & set(loop.proposer.seen)
    assert not set(numbers) & set(loop.proposer.observed)
    assert verify_ledger(study.open_ledger()).ok


def would_be_kept_if_control(study: Study) -> object:
    """A run that knows it is a control (it reads the ledger) and measures better then."""

    def behave(task: RunTask, files: dict[str, str]) -> FakeRun:
        ledger = Ledger(study.ledger_path, readonly=True)
        try:
            rec = ledger.get(task.experiment)
        finally:
            ledger.close()
        control = rec is not None and rec.control_of is not None
        value = x_of(files) - (5 if control else 0) + random.Random(task.repeat).gauss(0, 0.1)
        return FakeRun(stdout=f"score: {value}\n")

    return behave


def test_a_control_the_rule_would_keep_is_recorded_as_a_false_keep(tmp_path: Path) -> None:
    study = make_study(tmp_path / "repo", study_toml("repeats = 2\n", CONTROLS))
    run_study(study, would_be_kept_if_control(study), 6)
    ctl = controls_of(study)
    assert ctl and all(c["status"] == "discard" for c in ctl)
    for c in ctl:
        assert c["meta"]["control"] == {"of": c["of"], "verdict": "keep", "would_keep": True,
                                        "gain": c["meta"]["control"]["gain"]}  # fmt: skip
        assert c["meta"]["control"]["gain"] > 4
        assert "the rule would have kept it, a false keep" in c["reason"]
    assert git(study.root, "rev-parse", f"overnight/{study.name}") == study.status()["best"][
        "commit"
    ]
    st = study.status()
    assert st["controls"]["would_keep"] == st["controls"]["run"] == len(ctl)
    assert st["controls"]["rate"] == 1.0 and st["controls"]["high"]
    # verify replays the control: the rule gives keep, stored as discard.
    assert verify_ledger(study.open_ledger()).ok
    # Tampering with what the rule gave shows.
    n = ctl[0]["n"]
    db = Ledger(study.ledger_path)
    meta = dict(ctl[0]["meta"], control={**ctl[0]["meta"]["control"], "verdict": "discard"})
    db.db.execute("UPDATE experiments SET meta=? WHERE n=?", (json.dumps(meta), n))
    db.db.commit()
    db.close()
    report = verify_ledger(study.open_ledger())
    assert [d[0] for d in report.disagreements] == [n]
    assert "a control: recomputed keep" in report.disagreements[0][1]


def isolated_rate(alpha: float, repeats: int, draws: int = 20000) -> float:
    """The configured alpha's behaviour: how often the rule keeps a candidate that changes
    nothing, candidate and reference drawn independently (docs/trust.md's A/A table)."""
    rng, rule = random.Random(7), Rule("score", "minimize", alpha)
    kept = 0
    for _ in range(draws):
        a = [rng.gauss(0, 1) for _ in range(repeats)]
        b = [rng.gauss(0, 1) for _ in range(repeats)]
        kept += decide(rule, a, b, reference_experiment=0).status == "keep"
    return kept / draws


def test_an_aa_study_measures_a_false_keep_rate_that_matches_alpha(tmp_path: Path) -> None:
    """The Done-when check: no real change anywhere (every proposal adds a comment), noisy
    runs, repeats 3, alpha 0.05. The controls' false-keep rate has an interval that holds
    what the rule promises at that alpha, and the status says it is not high."""
    toml = study_toml("repeats = 3\nalpha = 0.05\nremeasure_every = 2\n", CONTROLS)
    study = make_study(tmp_path / "repo", toml)
    run_study(study, noisy(1.0, seed=3), 400)
    c = study.status()["controls"]
    assert c["every"] == 2 and c["run"] == 200 and c["failed"] == 0
    low, high = c["interval"]
    expected = isolated_rate(0.05, 3)
    assert 0.03 < expected <= 0.05
    assert low <= expected <= high
    assert low <= 0.05  # not above what alpha promises...
    assert c["would_keep"] >= 1  # ...and the controls do see the false keeps there are
    assert not c["high"] and c["suggestion"] == ""
    assert verify_ledger(study.open_ledger()).ok


def test_noise_the_repeats_cannot_see_shows_as_a_high_rate_with_advice(tmp_path: Path) -> None:
    """Each build shifts all its runs alike (a per-build effect, sd 1) while the repeats
    vary by 0.1: the t-test trusts the repeats and keeps nothing-changes often. The
    controls measure it and the status says what to raise."""
    study = make_study(tmp_path / "repo", study_toml("repeats = 3\n", CONTROLS))
    run_study(study, noisy(0.1, offset_sd=1.0, seed=5), 40)
    c = study.status()["controls"]
    assert c["run"] == 20
    assert c["interval"][0] > 0.05 and c["high"]
    assert "raise [metric] min_improvement to about" in c["suggestion"]
    assert "repeats to 6" in c["suggestion"] and "confirm = true" in c["suggestion"]
    # The suggested min_improvement is the controls' 95th percentile gain: at most a
    # twentieth of them gained more.
    suggested = float(c["suggestion"].split("about ")[1].split()[0])
    gains = [r["meta"]["control"]["gain"] for r in controls_of(study)]
    assert sum(g > suggested for g in gains) <= len(gains) * 0.05 + 1


def test_an_interrupted_control_resumes_as_a_control_of_the_current_best(tmp_path: Path) -> None:
    study = make_study(tmp_path / "repo", study_toml("repeats = 2\n", CONTROLS))
    run_study(study, noisy(0.5), 6)
    n = controls_of(study)[-1]["n"]
    # As a controller killed while the control ran leaves it.
    db = Ledger(study.ledger_path)
    db.set_state(n, "running", status=None, reason="")
    db.db.execute("DELETE FROM measurements WHERE n=?", (n,))
    db.db.commit()
    db.close()
    run_study(study, noisy(0.5, seed=1), 0)
    (again,) = [c for c in controls_of(study) if c["n"] == n]
    assert again["status"] is not None and again["reason"].startswith("control (")
    assert again["meta"]["control"]["of"] == study.status()["best"]["experiment"]
    assert verify_ledger(study.open_ledger()).ok
