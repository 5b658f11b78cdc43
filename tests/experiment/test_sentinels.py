"""Would-be keeps held as `suspect` for the morning review instead of kept: implausibly fast
runs, jumps beyond `[judge] max_jump`, and keeps past the night's `[holdout] budget`."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
from conftest import git, write_script
from support.inprocess import exact_with_holdout, make_study, run_study, study_toml, x_of

from overnight.executors.base import RunTask
from overnight.executors.fake import FakeRun
from overnight.judging.replay import verify_ledger
from overnight.store.study import Study

SCRIPTED = "support.scripted:ScriptedProposer"


def xs(*values: float) -> list[dict]:
    return [{"files": {"score.py": f"X = {v}\n"}, "description": f"X = {v}"} for v in values]


def scripted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, steps: list[dict],
             metric: str = "", extra: str = "", name: str = "score") -> Study:  # fmt: skip
    for key, value in write_script(tmp_path / "script.json", steps).items():
        monkeypatch.setenv(key, value)
    return make_study(tmp_path / "repo", study_toml(metric, extra, name, SCRIPTED))


def timed(fast_below: float, name: str = "score") -> object:
    """Runs take 5 s, except that a surface with X below `fast_below` takes 0.2 s."""

    def behave(task: RunTask, files: dict[str, str]) -> FakeRun:
        x = x_of(files)
        return FakeRun(stdout=f"{name}: {x}\n", wall_s=0.2 if x < fast_below else 5.0)

    return behave


def statuses(study: Study) -> list[tuple[int, str | None]]:
    return [(r.experiment, r.status) for r in study.log()]


def test_a_keep_far_faster_than_the_baseline_is_held_with_the_evidence(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    study = scripted(tmp_path, monkeypatch, xs(8, 3, 7))
    run_study(study, timed(fast_below=5), 3)
    assert statuses(study) == [(0, "keep"), (1, "keep"), (2, "suspect"), (3, "keep")]
    suspect = study.show(2)
    assert "took 0.2 s, 4.0% of the baseline's 5 s" in suspect["reason"]
    assert "[judge] wall_ratio = 0.1" in suspect["reason"]
    assert "held for the morning review" in suspect["reason"]
    assert suspect["meta"]["verdict"]["sentinel"]["wall_ratio"] == 0.1
    # Not on the branch; the branch head is the last keep.
    st = study.status()
    assert st["best"]["experiment"] == 3 and st["counts"]["suspect"] == 1
    assert st["suspects"] == [2]
    branch = git(study.root, "rev-list", f"overnight/{study.name}").split()
    assert suspect["commit"] not in branch and branch[0] == st["best"]["commit"]
    assert "\tsuspect\t" in study.tsv_path.read_text()
    # verify reaches the same verdict from the stored wall times; a doctored one shows.
    assert verify_ledger(study.open_ledger()).ok
    db = sqlite3.connect(study.ledger_path)
    db.execute("UPDATE measurements SET wall_s=5.0 WHERE n=2")
    db.commit()
    db.close()
    report = verify_ledger(study.open_ledger())
    assert report.disagreements == [(2, "recomputed keep, but the ledger says suspect")]


def test_a_faster_run_is_the_point_when_the_metric_is_a_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    study = scripted(tmp_path, monkeypatch, xs(3), name="seconds")
    run_study(study, timed(fast_below=5, name="seconds"), 1)
    assert statuses(study) == [(0, "keep"), (1, "keep")]
    assert "sentinel" not in study.show(1)["meta"]["verdict"]


def test_the_wall_sentinel_can_be_turned_off(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    study = scripted(tmp_path, monkeypatch, xs(3), extra="\n[judge]\nwall_ratio = 0\n")
    run_study(study, timed(fast_below=5), 1)
    assert statuses(study) == [(0, "keep"), (1, "keep")]


def test_a_jump_beyond_max_jump_is_held(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    study = scripted(tmp_path, monkeypatch, xs(4, 6, 2),
                     extra='\n[judge]\nmax_jump = "50%"\n')  # fmt: skip
    run_study(study, timed(fast_below=0), 3)
    # 10 → 4 gains 60% of the best: held; 10 → 6 (40%) kept; 6 → 2 (67% of 6) held.
    assert statuses(study) == [(0, "keep"), (1, "suspect"), (2, "keep"), (3, "suspect")]
    reason = study.show(1)["reason"]
    assert "a gain of 6 score is more than [judge] max_jump (5) allows" in reason
    assert "max_jump (3) allows" in study.show(3)["reason"]
    assert verify_ledger(study.open_ledger()).ok


def test_keeps_past_the_holdout_budget_are_held_for_the_morning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    holdout = '\n[holdout]\ncommand = "python holdout.py"\nname = "acc"\nbudget = 3\n'
    study = scripted(tmp_path, monkeypatch, xs(9, 8, 7, 6), extra=holdout)
    run_study(study, exact_with_holdout, 4)
    # The baseline reads once, the first two keeps once each; then the budget is spent.
    assert statuses(study) == [(0, "keep"), (1, "keep"), (2, "keep"), (3, "suspect"),
                               (4, "suspect")]  # fmt: skip
    reason = study.show(3)["reason"]
    assert "held for the morning review: the night's [holdout] budget of 3 reads is spent" in (
        reason
    )
    reads = study.status()["holdout"]["reads"]
    assert reads == {"night": 3, "total": 3, "budget": 3, "held": 2}
    assert verify_ledger(study.open_ledger()).ok
    # A new night has a new budget: the resumed study reads again.
    for key, value in write_script(tmp_path / "s2.json", xs(5)).items():
        monkeypatch.setenv(key, value)
    run_study(Study.open(cwd=study.root), exact_with_holdout, 1)
    assert statuses(study)[-1] == (5, "keep")
    assert study.status()["holdout"]["reads"] == {"night": 1, "total": 4, "budget": 3,
                                                   "held": 2}  # fmt: skip


def test_every_holdout_read_is_counted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    holdout = '\n[holdout]\ncommand = "python holdout.py"\nname = "acc"\n'
    study = scripted(tmp_path, monkeypatch, xs(9, 11, 8), extra=holdout)
    run_study(study, exact_with_holdout, 3)
    events = study.open_ledger().events("holdout_read")
    assert [e["experiment"] for e in events] == [0, 1, 3]
    assert study.status()["holdout"]["reads"]["budget"] == 0
    assert json.loads(study.open_ledger().get_meta("night") or "{}")["after_event"] >= 0
