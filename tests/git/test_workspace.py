"""The slot worktree between commands: back to exactly the candidate commit, whatever the
run did to it, without following a link and without trusting an index the run rewrote;
and the controller's git commands run no hook a run planted."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from conftest import git, make_repo

from overnight.git.workspace import Workspace


@pytest.fixture
def ws(tmp_path: Path) -> Workspace:
    repo = make_repo(tmp_path / "repo", {"train.py": "x = 1\n", "evaluate.py": "ok\n",
                                         "data/inputs.json": "[]\n"})  # fmt: skip
    return Workspace(repo, "t")


def candidate(ws: Workspace, files: dict[str, str]) -> str:
    return ws.make_commit(ws.user_head(), files, "candidate")


def test_planted_files_go_and_tracked_ones_come_back(ws: Workspace, tmp_path: Path) -> None:
    commit = candidate(ws, {"train.py": "x = 2\n", "new_helper.py": "y = 1\n"})
    wt = ws.worktree(0)
    path = wt.checkout(commit)
    outside = tmp_path / "outside"
    outside.mkdir()
    (path / "json.py").write_text("shadow")
    (path / "__pycache__").mkdir()
    (path / "__pycache__" / "evaluate.cpython-311.pyc").write_bytes(b"forged")
    (path / ".overnight").mkdir()
    (path / ".overnight" / "leak.json").write_text("holdout")
    (path / "evaluate.py").write_text("rewritten")
    (path / "new_helper.py").write_text("changed")
    os.rename(path / "data", path / "data_moved")
    (path / "data").symlink_to(outside)
    changed = wt.clean()
    assert changed == ["data/inputs.json", "evaluate.py", "new_helper.py"]
    names = sorted(p.name for p in path.iterdir() if p.name != ".git")
    assert names == ["data", "evaluate.py", "new_helper.py", "train.py"]
    assert (path / "evaluate.py").read_text() == "ok\n"
    assert (path / "new_helper.py").read_text() == "y = 1\n"  # new in the candidate: kept
    assert not (path / "data").is_symlink() and list(outside.iterdir()) == []
    # A second clean (the next repeat) leaves the candidate's own new file alone.
    assert wt.clean() == [] and (path / "new_helper.py").exists()


def test_only_what_the_run_changed_is_reported_and_rewritten(ws: Workspace) -> None:
    wt = ws.worktree(0)
    wt.checkout(candidate(ws, {"train.py": "x = 2\n"}))
    # The next candidate: its surface differs from the tree the index was first built from.
    path = wt.checkout(candidate(ws, {"train.py": "x = 3\n"}))
    before = os.stat(path / "train.py").st_ino
    assert wt.clean() == []
    assert os.stat(path / "train.py").st_ino == before  # not rewritten
    # A mode change alone is a change, and is put back.
    (path / "evaluate.py").chmod(0o755)
    assert wt.clean() == ["evaluate.py"]
    assert not os.access(path / "evaluate.py", os.X_OK)
    assert (path / "evaluate.py").read_text() == "ok\n"
    (path / "train.py").write_text("x = 99\n")
    assert wt.clean() == ["train.py"] and (path / "train.py").read_text() == "x = 3\n"


def test_an_index_the_run_rewrote_is_not_trusted(ws: Workspace) -> None:
    wt = ws.worktree(0)
    path = wt.checkout(candidate(ws, {"train.py": "x = 3\n"}))
    (path / "json.py").write_text("shadow")
    git(path, "add", "-f", "json.py")  # now "tracked" as far as the index is concerned
    (path / "evaluate.py").write_text("rewritten")
    git(path, "add", "evaluate.py")
    assert wt.clean() == ["evaluate.py"]
    assert not (path / "json.py").exists() and (path / "evaluate.py").read_text() == "ok\n"


def test_controller_git_runs_no_planted_hook(ws: Workspace, tmp_path: Path) -> None:
    proof = tmp_path / "proof"
    hooks = ws.root / ".git" / "hooks"
    hooks.mkdir(exist_ok=True)
    for name in ("reference-transaction", "post-checkout"):
        (hooks / name).write_text(f"#!/bin/sh\ntouch {proof}-{name}\n")
        (hooks / name).chmod(0o755)
    # The plain git CLI would run them (the hooks work) …
    subprocess.run(["git", "update-ref", "refs/probe", "HEAD"], cwd=ws.root, check=True)
    assert (tmp_path / "proof-reference-transaction").exists()
    (tmp_path / "proof-reference-transaction").unlink()
    # … the controller's git never does.
    ws.set_branch(candidate(ws, {"train.py": "x = 4\n"}))
    ws.worktree(1)  # `git worktree add` checks out: post-checkout
    assert not list(tmp_path.glob("proof-*"))
