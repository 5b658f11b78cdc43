"""`overnight apply N`: experiment N's change onto the user's checkout, as an unstaged edit.

The change (its candidate commit against its parent) is carried onto the working files with
`git.transfer.carry`, the mechanism the loop uses for a stale proposal: the proposer's own
re-application when it has one (tune's knob values, llm's SEARCH/REPLACE blocks), else a
word-level three-way merge, so local edits and neighbouring changes survive. Every file is
computed in memory first; only when all carry is anything written, so a refusal leaves the
checkout exactly as it was. The index is never touched.
"""

from __future__ import annotations

import os
import stat
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from overnight.errors import OvernightError, UsageError
from overnight.git.transfer import Carried, decode, encode
from overnight.git.workspace import SAFE_OPTIONS, Workspace, git
from overnight.review.changes import Changes, Recorded
from overnight.store.study import Study


@dataclass
class ApplyResult:
    n: int
    description: str
    changed: list[str] = field(default_factory=list)  # files written or deleted
    already: list[str] = field(default_factory=list)  # files that already had the change
    how: str = ""  # how it was carried: "proposer" (its own re-application) or "merge"
    by: str = ""


def _mode(ws: Workspace, tree: str, path: str) -> str:
    """The mode of `path` in `tree` ("100644", "100755", …; "" when absent)."""
    out = git("ls-tree", "-z", tree, "--", path, cwd=ws.root).rstrip("\0")
    return out.split()[0] if out else ""


def _tree_from_stored_diff(ws: Workspace, parent: str, diff: str) -> str:
    """The tree of a proposal that never became a commit (e.g. invalid as a duplicate),
    rebuilt from the diff the ledger stored, on a throw-away index."""
    ws.state_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="apply-", dir=ws.state_dir) as tmp:
        env = {**os.environ, "GIT_INDEX_FILE": str(Path(tmp) / "index")}
        git("read-tree", parent, cwd=ws.root, env=env)
        proc = subprocess.run(["git", *SAFE_OPTIONS, "apply", "--cached", "-"], cwd=ws.root,
                              env=env, input=diff.encode(), capture_output=True)  # fmt: skip
        if proc.returncode != 0:
            err = proc.stderr.decode(errors="replace").strip()
            raise OvernightError(f"the stored diff does not apply to its parent: {err}")
        return git("write-tree", cwd=ws.root, env=env).strip()


def _change(study: Study, n: int) -> tuple[Recorded, str | None]:
    """Experiment `n`'s change and the commit the study started from."""
    ledger = study.open_ledger()
    try:
        row = ledger.row(n)
        rec = ledger.get(n)
        start = ledger.get_meta("start_commit")
    finally:
        ledger.close()
    if row is None or rec is None:
        raise UsageError(f"study {study.name!r} has no experiment {n}")
    if n == 0:
        raise UsageError("experiment 0 is the baseline: it changes nothing")
    if row.get("control_of") is not None:
        raise UsageError(f"experiment {n} is a control (the unchanged best, experiment "
                         f"{row['control_of']}, measured blind): it changes nothing")  # fmt: skip
    parent, commit = row["parent"], row["commit_sha"]
    ws = study.ws
    meta = rec.meta if isinstance(rec.meta, dict) else {}
    found = Recorded(n, parent or "", commit or "", rec.description, rec.proposer, meta)
    if commit and parent and ws.commit_exists(commit) and ws.commit_exists(parent):
        return found, start
    if parent and row["diff"].strip() and ws.commit_exists(parent):
        found.new = _tree_from_stored_diff(ws, parent, row["diff"])
        return found, start
    why = f" ({row['status']}: {row['reason']})" if row["status"] else ""
    raise UsageError(f"experiment {n} has no change to apply{why}")


def _refusal(study: Study, n: int, parent: str, done: Carried) -> str:
    files = ", ".join(done.paths)
    edited = git("diff", "--name-only", "HEAD", "--", *done.paths, cwd=study.root, check=False)
    if edited.strip():
        return (
            f"refusing to apply experiment {n}: your checkout has local edits that conflict "
            f"with its change in {files} ({done.reason()}). Commit or stash them "
            f"(`git stash`), then run `overnight apply {n}` again. Nothing was changed."
        )
    # No local edits: the committed code itself changed the same text since.
    return (
        f"refusing to apply experiment {n}: {files} in your checkout differs from the code "
        f"the change was made against ({parent[:7]}) in the same text: {done.reason()}. "
        f"Try it on that commit (`git switch --detach {parent[:7]}`, then `overnight apply "
        f"{n}`). Nothing was changed."
    )


def apply_experiment(study: Study, n: int) -> ApplyResult:
    """Carry experiment `n`'s change onto the working files of the user's checkout."""
    rec, start = _change(study, n)
    root = study.root
    changes = Changes(study, start)
    if not changes.paths(rec):
        raise UsageError(f"experiment {n} changes nothing")
    target = {}
    for path in changes.target_paths(rec):
        file = root / path
        target[path] = decode(file.read_bytes()) if file.is_file() else None
    done = changes.carry(rec, target)
    if done.files is None:
        raise UsageError(_refusal(study, n, rec.parent, done))
    result = ApplyResult(n, rec.description, how=done.how, by=done.by)
    for path, text in sorted(done.files.items()):
        if text == target.get(path):
            result.already.append(path)
            continue
        file = root / path
        if text is None:
            file.unlink(missing_ok=True)
            result.changed.append(path)
            continue
        existed = file.exists()
        file.parent.mkdir(parents=True, exist_ok=True)
        file.write_bytes(encode(text) or b"")
        if not existed and _mode(study.ws, rec.new, path) == "100755":
            file.chmod(file.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
        result.changed.append(path)
    return result
