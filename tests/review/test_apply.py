"""`overnight apply N`: an experiment's change onto the user's checkout, unstaged; refused
(exit 2, nothing changed) when local edits conflict with it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import git, make_repo, run_cli, score_config, write_script


def src(x: float, y: float, tail: str = "") -> str:
    return f"X = {x}\n# -\n# -\n# -\n# -\nY = {y}\nprint(f'score: {{X + Y}}')\n{tail}"


@pytest.fixture(scope="module")
def study_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Experiment 1 keeps X 10 → 7; experiment 2 (discarded) tries Y 5 → 9."""
    tmp_path = tmp_path_factory.mktemp("apply")
    repo = make_repo(tmp_path / "repo", {"score.py": src(10, 5), "overnight.toml": score_config()})
    env = write_script(tmp_path / "s.json", [
        {"files": {"score.py": src(7, 5)}, "description": "X 10 → 7"},
        {"files": {"score.py": src(7, 9)}, "description": "Y 5 → 9"},
    ])  # fmt: skip
    assert run_cli(repo, "run", "-n", "2", "--plain", env=env).returncode == 0
    statuses = [r["status"] for r in json.loads(run_cli(repo, "log", "--json").stdout)]
    assert statuses == ["keep", "keep", "discard"]
    return repo


@pytest.fixture
def study(study_repo: Path) -> Path:
    """The shared study with a pristine checkout (one study run serves every test)."""
    git(study_repo, "reset", "-q", "--hard")
    return study_repo


def test_apply_onto_a_clean_checkout_is_unstaged(study: Path) -> None:
    out = run_cli(study, "apply", "2")  # a discarded experiment: only its own change
    assert out.returncode == 0, out.stderr
    assert "unstaged" in out.stdout
    assert (study / "score.py").read_text() == src(10, 9)
    assert git(study, "status", "--porcelain") == "M score.py"  # worktree only, not staged
    assert git(study, "diff", "--cached") == ""
    out = run_cli(study, "apply", "2")
    assert out.returncode == 0 and "already in your checkout" in out.stdout


def test_apply_merges_with_unrelated_local_edits(study: Path) -> None:
    (study / "score.py").write_text(src(10, 5, tail="print('local note')\n"))
    out = run_cli(study, "apply", "1")
    assert out.returncode == 0, out.stderr
    assert (study / "score.py").read_text() == src(7, 5, tail="print('local note')\n")


def test_apply_refuses_conflicting_local_edits_and_changes_nothing(study: Path) -> None:
    dirty = src(11, 5)
    (study / "score.py").write_text(dirty)
    git(study, "add", "score.py")  # staged, so the index must also stay as it is
    index_before = git(study, "ls-files", "-s")
    out = run_cli(study, "apply", "1")
    assert out.returncode == 2
    assert "conflict" in out.stderr and "score.py" in out.stderr
    assert "Nothing was changed" in out.stderr
    assert (study / "score.py").read_text() == dirty
    assert git(study, "ls-files", "-s") == index_before


def test_apply_rejects_the_baseline_and_unknown_experiments(study: Path) -> None:
    for n, needle in (("0", "baseline"), ("9", "no experiment 9")):
        out = run_cli(study, "apply", n)
        assert out.returncode == 2 and needle in out.stderr, out.stderr
    assert git(study, "status", "--porcelain") == ""


def test_apply_carries_over_a_committed_change_on_the_next_line(study: Path) -> None:
    """A line merge refused this (adjacent lines); the word-level merge carries it."""
    git(study, "checkout", "-q", "-b", "next-line")
    (study / "score.py").write_text(src(10, 5).replace("X = 10\n", "X = 10\nZ = 0\n"))
    git(study, "commit", "-qam", "Z below X")
    try:
        out = run_cli(study, "apply", "1")
        assert out.returncode == 0, out.stderr
        assert "merged word by word" in out.stdout
        assert (study / "score.py").read_text() == src(7, 5).replace("X = 7\n", "X = 7\nZ = 0\n")
    finally:
        git(study, "reset", "-q", "--hard")
        git(study, "checkout", "-q", "main")


def test_apply_refuses_when_the_committed_code_moved_on(study: Path) -> None:
    git(study, "checkout", "-q", "-b", "moved")
    (study / "score.py").write_text(src(12, 5))
    git(study, "commit", "-qam", "X 12")
    try:
        out = run_cli(study, "apply", "1")
        assert out.returncode == 2 and "differs from the code the change was made" in out.stderr
        assert "git switch --detach" in out.stderr
        assert ("score.py line 1: the change turns `X = 10` into `X = 7`, but here it reads "
                "`X = 12`") in out.stderr  # fmt: skip
        assert git(study, "status", "--porcelain") == ""
    finally:
        git(study, "checkout", "-q", "main")
