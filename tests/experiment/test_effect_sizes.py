"""Each kept commit carries its measured gain ± interval (trailer `Overnight-Gain:`), so
`git log` of the study branch tells a clear gain from a marginal one."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from conftest import git, write_script
from support.inprocess import make_study, run_study, study_toml, x_of

from overnight.executors.base import RunTask
from overnight.executors.fake import FakeRun
from overnight.judging.replay import verify_ledger


def behave(task: RunTask, files: dict[str, str]) -> FakeRun:
    noise = random.Random(f"{task.experiment}:{task.kind}:{task.repeat}").gauss(0, 0.1)
    return FakeRun(stdout=f"score: {x_of(files) + noise}\n")


def test_kept_commits_carry_their_gain_and_interval(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    steps = [{"files": {"score.py": f"X = {v}\n"}, "description": f"X = {v}"}
             for v in (8, 9, 5)]  # fmt: skip
    for key, value in write_script(tmp_path / "s.json", steps).items():
        monkeypatch.setenv(key, value)
    study = make_study(tmp_path / "repo",
                       study_toml("repeats = 3\n", proposer="support.scripted:ScriptedProposer"))
    run_study(study, behave, 3)
    log = {r.experiment: r for r in study.log()}
    assert [log[n].status for n in (1, 2, 3)] == ["keep", "discard", "keep"]
    branch = f"overnight/{study.name}"
    gains = git(study.root, "log", "--format=%(trailers:key=Overnight-Gain,valueonly)",
                branch).split("\n")  # fmt: skip
    assert len([g for g in gains if g.strip()]) == 2  # the keeps, not the start commit
    newest = gains[0]
    assert abs(float(newest.split()[0]) - 3) < 0.3  # 8 → 5, the noise sd is 0.1
    assert " ± " in newest and "score (95% CI " in newest
    assert "welch, 3 vs 3 runs, p = " in newest and "marginal" not in newest
    for n in (1, 3):
        rec = log[n]
        # The commit that landed is the one the ledger, the ref and the branch name.
        ref = git(study.root, "rev-parse", f"refs/overnight/{study.name}/{n}")
        assert ref == rec.commit
        message = git(study.root, "log", "-1", "--format=%B", rec.commit)
        assert message.startswith(f"X = {8 if n == 1 else 5}\n\nOvernight-Experiment: {n}\n")
        gain = rec.meta["gain"]
        assert gain["low"] < gain["gain"] < gain["high"] and gain["low"] > 0
        assert gain["runs"] == [3, 3] and gain["method"] == "welch" and not gain["marginal"]
        # Same tree as the candidate that was measured, on the previous best.
        assert git(study.root, "rev-parse", f"{rec.commit}^") == (
            log[0].commit if n == 1 else log[1].commit)  # fmt: skip
    assert git(study.root, "rev-parse", branch) == log[3].commit
    assert git(study.root, "show", f"{branch}:score.py") == "X = 5"
    assert verify_ledger(study.open_ledger()).ok
