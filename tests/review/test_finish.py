"""`overnight finish`: the keeps as a clean series on overnight/<name>-final, squashed,
with keeps dropped (re-applied three-way, conflicts reported), and as patch files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import git, make_repo, run_cli, score_config, write_script


def src(x: float, y: float) -> str:
    # X and Y sit far enough apart that a change to one merges cleanly without the other.
    return f"X = {x}\n# -\n# -\n# -\n# -\nY = {y}\nprint(f'score: {{X + Y}}')\n"


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Keeps 1 (X), 2 (Y, independent), 4 (X again: builds on 1); 3 is a discard."""
    tmp = tmp_path_factory.mktemp("finish")
    repo = make_repo(tmp / "repo", {"score.py": src(10, 5), "overnight.toml": score_config()})
    env = write_script(tmp / "s.json", [
        {"files": {"score.py": src(7, 5)}, "description": "X 10 → 7"},
        {"files": {"score.py": src(7, 3)}, "description": "Y 5 → 3"},
        {"files": {"score.py": src(9, 3)}, "description": "X 7 → 9"},
        {"files": {"score.py": src(5, 3)}, "description": "X 7 → 5"},
    ])  # fmt: skip
    out = run_cli(repo, "run", "-n", "4", "--plain", env=env)
    assert out.returncode == 0, out.stderr + out.stdout
    statuses = [r["status"] for r in json.loads(run_cli(repo, "log", "--json").stdout)]
    assert statuses == ["keep", "keep", "keep", "discard", "keep"]
    st = run_cli(repo, "status")
    assert st.returncode == 0 and "constraints" not in st.stdout  # none configured
    return repo


def start_of(repo: Path) -> str:
    status = json.loads(run_cli(repo, "status", "--json").stdout)
    assert status["constraints"] == []
    return status["start_commit"]


def series(repo: Path) -> list[str]:
    return git(repo, "rev-list", "--reverse", f"{start_of(repo)}..overnight/t-final").split()


def test_finish_writes_one_commit_per_keep_with_the_best_tree(study: Path) -> None:
    out = run_cli(study, "finish")
    assert out.returncode == 0, out.stderr
    assert "identical to the study's best (experiment 4)" in out.stdout
    commits = series(study)
    assert len(commits) == 3
    assert git(study, "rev-parse", "overnight/t-final^{tree}") == git(
        study, "rev-parse", "overnight/t^{tree}"
    )
    assert git(study, "rev-parse", f"{commits[0]}^") == start_of(study)
    messages = [git(study, "log", "-1", "--format=%B", c) for c in commits]
    for msg, (n, desc, change) in zip(messages, [
        (1, "X 10 → 7", "score 15 → 12"), (2, "Y 5 → 3", "score 12 → 10"),
        (4, "X 7 → 5", "score 10 → 8"),
    ], strict=True):  # fmt: skip
        assert msg.startswith(desc + "\n")
        assert change in msg
        assert msg.strip().endswith(f"Overnight-Experiment: {n}")
    # The user's checkout is untouched.
    assert git(study, "rev-parse", "--abbrev-ref", "HEAD") == "main"
    assert git(study, "status", "--porcelain") == ""


def test_squash_makes_one_commit_with_every_experiment(study: Path) -> None:
    out = run_cli(study, "finish", "--squash")
    assert out.returncode == 0, out.stderr
    (commit,) = series(study)
    assert git(study, "rev-parse", f"{commit}^{{tree}}") == git(
        study, "rev-parse", "overnight/t^{tree}"
    )
    msg = git(study, "log", "-1", "--format=%B", commit)
    assert msg.startswith("overnight t: score 15 → 8 (3 changes)")
    trailers = git(study, "log", "-1", "--format=%(trailers:key=Overnight-Experiment)", commit)
    assert trailers.split("\n") == [f"Overnight-Experiment: {n}" for n in (1, 2, 4)]


def test_drop_reapplies_the_rest_in_order(study: Path) -> None:
    out = run_cli(study, "finish", "--drop", "2", "--json")
    assert out.returncode == 0, out.stderr
    rows = json.loads(out.stdout)
    assert [r["experiment"] for r in rows] == [1, 4]
    commits = series(study)
    assert [r["commit"] for r in rows] == commits
    assert git(study, "show", "overnight/t-final:score.py") == src(5, 5).strip()
    assert "without experiment(s) 2" in git(study, "log", "-1", "--format=%B", commits[-1])


def test_dropping_a_keep_that_later_keeps_build_on_reports_the_conflict(study: Path) -> None:
    assert run_cli(study, "finish").returncode == 0
    before = git(study, "rev-parse", "overnight/t-final")
    out = run_cli(study, "finish", "--drop", "1")
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "experiment 4" in out.stderr and "score.py" in out.stderr
    assert "drop experiment 4 too" in out.stderr and "branch not written" in out.stderr
    assert git(study, "rev-parse", "overnight/t-final") == before
    # Dropping both the keep and what builds on it is fine.
    out = run_cli(study, "finish", "--drop", "1,4")
    assert out.returncode == 0, out.stderr
    assert git(study, "show", "overnight/t-final:score.py") == src(10, 3).strip()


def test_drop_must_name_keeps(study: Path) -> None:
    for arg, needle in (("3", "not a keep (discard)"), ("0", "baseline"), ("x", "expected")):
        out = run_cli(study, "finish", "--drop", arg)
        assert out.returncode == 2 and needle in out.stderr, out.stderr
    out = run_cli(study, "finish", "--drop", "1,2,4")
    assert out.returncode == 2 and "no keeps" in out.stderr


def test_patches_and_a_foreign_commit_on_the_final_branch(study: Path, tmp_path: Path) -> None:
    out = run_cli(study, "finish", "--patches", str(tmp_path / "p"))
    assert out.returncode == 0, out.stderr
    patches = sorted((tmp_path / "p").glob("*.patch"))
    assert len(patches) == 3
    assert "Overnight-Experiment: 1" in patches[0].read_text()
    assert "+Y = 3" in patches[1].read_text()
    # A commit the user added on the final branch is never overwritten silently.
    git(study, "checkout", "-q", "overnight/t-final")
    (study / "notes.txt").write_text("mine\n")
    git(study, "add", "notes.txt")
    git(study, "commit", "-qm", "my own commit")
    git(study, "checkout", "-q", "main")
    out = run_cli(study, "finish")
    assert out.returncode == 2 and "did not write" in out.stderr
    git(study, "branch", "-D", "overnight/t-final")


def test_finish_before_any_keep(score_repo: Path) -> None:
    out = run_cli(score_repo, "finish")
    assert out.returncode == 2 and "has not run yet" in out.stderr
