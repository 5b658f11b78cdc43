"""`overnight apply N`: experiment N's change onto the user's checkout, as an unstaged edit.

The change is the experiment's own diff (its candidate commit against its parent), merged
three-way into each working file, so local edits elsewhere in the same file survive. Every
file is merged in memory first; only when all merge cleanly is anything written, so a
refusal leaves the checkout exactly as it was. The index is never touched.
"""

from __future__ import annotations

import os
import stat
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from overnight.errors import OvernightError, UsageError
from overnight.git.workspace import SAFE_OPTIONS, Workspace, git
from overnight.store.study import Study


@dataclass
class ApplyResult:
    n: int
    description: str
    changed: list[str] = field(default_factory=list)  # files written or deleted
    already: list[str] = field(default_factory=list)  # files that already had the change


def _blob(ws: Workspace, tree: str, path: str) -> tuple[bytes | None, str]:
    """Content and mode of `path` in `tree` (None when absent)."""
    out = git("ls-tree", "-z", tree, "--", path, cwd=ws.root).rstrip("\0")
    if not out:
        return None, ""
    mode, _, sha = out.split("\t", 1)[0].split()
    data = subprocess.run(
        ["git", *SAFE_OPTIONS, "cat-file", "blob", sha], cwd=ws.root, capture_output=True,
        check=True,
    ).stdout
    return data, mode


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


def _merge(base: bytes, ours: bytes, theirs: bytes) -> bytes | None:
    """`git merge-file` of one file; None on conflicts (or content it cannot merge)."""
    with tempfile.TemporaryDirectory(prefix="overnight-apply-") as tmp:
        paths = []
        for name, data in (("ours", ours), ("base", base), ("theirs", theirs)):
            p = Path(tmp) / name
            p.write_bytes(data)
            paths.append(str(p))
        proc = subprocess.run(["git", "merge-file", "-p", "--quiet", *paths], capture_output=True)
    return proc.stdout if proc.returncode == 0 else None


def _change(study: Study, n: int) -> tuple[str, str, str]:
    """(parent tree-ish, new tree-ish, description) of experiment `n`'s change."""
    ledger = study.open_ledger()
    try:
        row = ledger.row(n)
    finally:
        ledger.close()
    if row is None:
        raise UsageError(f"study {study.name!r} has no experiment {n}")
    if n == 0:
        raise UsageError("experiment 0 is the baseline: it changes nothing")
    parent, commit, desc = row["parent"], row["commit_sha"], row["description"]
    ws = study.ws
    if commit and parent and ws.commit_exists(commit) and ws.commit_exists(parent):
        return parent, commit, desc
    if parent and row["diff"].strip() and ws.commit_exists(parent):
        return parent, _tree_from_stored_diff(ws, parent, row["diff"]), desc
    why = f" ({row['status']}: {row['reason']})" if row["status"] else ""
    raise UsageError(f"experiment {n} has no change to apply{why}")


def _refusal(study: Study, n: int, parent: str, conflicts: list[str]) -> str:
    files = ", ".join(conflicts)
    edited = git("diff", "--name-only", "HEAD", "--", *conflicts, cwd=study.root, check=False)
    if edited.strip():
        return (
            f"refusing to apply experiment {n}: your checkout has local edits that conflict "
            f"with its change in {files}. Commit or stash them (`git stash`), then run "
            f"`overnight apply {n}` again. Nothing was changed."
        )
    # No local edits: the committed code itself has moved on where the change was made.
    return (
        f"refusing to apply experiment {n}: {files} in your checkout differs from the code "
        f"the change was made against ({parent[:7]}) in the same lines. Try it on that "
        f"commit (`git switch --detach {parent[:7]}`, then `overnight apply {n}`). "
        "Nothing was changed."
    )


def apply_experiment(study: Study, n: int) -> ApplyResult:
    """Merge experiment `n`'s change into the working files of the user's checkout."""
    parent, new, desc = _change(study, n)
    ws, root = study.ws, study.root
    names = git("diff", "--name-only", "--no-renames", "-z", parent, new, cwd=root)
    paths = [p for p in names.split("\0") if p]
    result = ApplyResult(n, desc)
    if not paths:
        raise UsageError(f"experiment {n} changes nothing")
    plan: dict[str, tuple[bytes | None, str]] = {}
    conflicts: list[str] = []
    for path in paths:
        base, _ = _blob(ws, parent, path)
        theirs, mode = _blob(ws, new, path)
        target = root / path
        ours = target.read_bytes() if target.is_file() else None
        if ours == theirs:
            result.already.append(path)
        elif ours == base:
            plan[path] = (theirs, mode)
        elif ours is None or base is None or theirs is None:
            conflicts.append(path)  # added or deleted on one side, edited on the other
        else:
            merged = _merge(base, ours, theirs)
            if merged is None:
                conflicts.append(path)
            elif merged == ours:  # the change is there already, beside other local edits
                result.already.append(path)
            else:
                plan[path] = (merged, mode)
    if conflicts:
        raise UsageError(_refusal(study, n, parent, conflicts))
    for path, (data, mode) in plan.items():
        target = root / path
        if data is None:
            target.unlink()
            result.changed.append(path)
            continue
        existed = target.exists()
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
        if not existed and mode == "100755":
            target.chmod(target.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
        result.changed.append(path)
    return result
