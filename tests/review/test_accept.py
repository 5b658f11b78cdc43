"""`overnight accept N` in-process: what it refuses, and what an accepted suspect becomes."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import git, write_script
from support.inprocess import make_study, run_study, study_toml, x_of

from overnight.errors import UsageError
from overnight.executors.base import RunTask
from overnight.executors.fake import FakeRun
from overnight.judging.replay import verify_ledger
from overnight.review.accept import accept_suspect
from overnight.store.lock import study_lock


def behave(task: RunTask, files: dict[str, str]) -> FakeRun:
    return FakeRun(stdout=f"score: {x_of(files)}\n")


def study_with(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, *xs: float):  # noqa: ANN201
    steps = [{"files": {"score.py": f"X = {x}\n"}, "description": f"X = {x}"} for x in xs]
    for key, value in write_script(tmp_path / "s.json", steps).items():
        monkeypatch.setenv(key, value)
    toml = study_toml(extra='\n[judge]\nmax_jump = "50%"\n',
                      proposer="support.scripted:ScriptedProposer")  # fmt: skip
    study = make_study(tmp_path / "repo", toml)
    run_study(study, behave, len(xs))
    return study


def test_a_suspect_judged_against_an_older_best_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    study = study_with(tmp_path, monkeypatch, 4, 6)  # 1: suspect, 2: keep
    head = git(study.root, "rev-parse", "overnight/t")
    with pytest.raises(UsageError, match="judged against an earlier best; the best is now "
                                         "experiment 2"):  # fmt: skip
        accept_suspect(study, 1)
    assert git(study.root, "rev-parse", "overnight/t") == head
    assert study.show(1)["status"] == "suspect"


def test_accept_refuses_while_a_run_holds_the_study(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    study = study_with(tmp_path, monkeypatch, 4)
    with study_lock(study.state_dir, study.name), pytest.raises(UsageError, match="already"):
        accept_suspect(study, 1)
    rec = accept_suspect(study, 1)
    assert rec.status == "keep" and rec.meta["accepted"]["reason"].startswith("score 10 → 4")
    assert rec.meta["gain"]["gain"] == 6 and rec.meta["gain"]["method"] == "greedy"
    assert git(study.root, "rev-parse", "overnight/t") == rec.commit
    assert study.status()["best"]["experiment"] == 1
    assert verify_ledger(study.open_ledger()).ok
