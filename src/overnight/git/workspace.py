"""Git for one study: the branch, candidate commits and refs, and the slot worktrees.

The user's checkout, index and current branch are never touched: candidates are built with
plumbing commands against a private index file, and runs happen in worktrees under
`.overnight/worktrees/`.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Iterable, Mapping
from pathlib import Path

from overnight.errors import OvernightError, UsageError

TRAILER = "Overnight-Experiment"
_FALLBACK_IDENTITY = {
    "GIT_AUTHOR_NAME": "overnight",
    "GIT_AUTHOR_EMAIL": "overnight@localhost",
    "GIT_COMMITTER_NAME": "overnight",
    "GIT_COMMITTER_EMAIL": "overnight@localhost",
}


class GitError(OvernightError):
    pass


def git(
    *args: str,
    cwd: Path,
    input: str | bytes | None = None,
    env: Mapping[str, str] | None = None,
    check: bool = True,
) -> str:
    """Run one git command and return its stdout (text)."""
    data = input.encode() if isinstance(input, str) else input
    proc = subprocess.run(
        ["git", *args],
        cwd=cwd,
        input=data,
        capture_output=True,
        env=dict(env) if env is not None else None,
    )
    if check and proc.returncode != 0:
        err = proc.stderr.decode(errors="replace").strip()
        raise GitError(f"git {' '.join(args[:3])} failed: {err}")
    return proc.stdout.decode(errors="replace")


def find_repo_root(start: Path) -> Path:
    """The top of the git work tree containing `start`, or a clear usage error."""
    proc = subprocess.run(
        ["git", "rev-parse", "--show-toplevel"], cwd=start, capture_output=True, text=True
    )
    if proc.returncode != 0:
        raise UsageError(
            f"{start} is not inside a git repository; overnight keeps every experiment as a "
            "git commit. Run `git init` and commit your code first."
        )
    return Path(proc.stdout.strip())


class Workspace:
    """Git operations of one study, rooted at the repository's top level."""

    def __init__(self, root: Path, study: str) -> None:
        self.root = root
        self.study = study
        self.branch = f"overnight/{study}"
        self.branch_ref = f"refs/heads/{self.branch}"
        self.ref_prefix = f"refs/overnight/{study}"
        self.state_dir = root / ".overnight" / study
        self.worktrees_dir = root / ".overnight" / "worktrees"
        self._index = self.state_dir / "candidate.index"
        self._env = self._commit_env()
        self._modes: dict[str, str] = {}
        # Slot threads share the private index and `.git/worktrees/`; these are the only
        # git operations that need serialising (refs are updated with compare-and-swap).
        self._index_lock = threading.Lock()
        self._worktree_lock = threading.Lock()
        self._git_dir = Path(git("rev-parse", "--git-common-dir", cwd=root).strip())
        if not self._git_dir.is_absolute():
            self._git_dir = (root / self._git_dir).resolve()

    # -- set-up ---------------------------------------------------------------------------

    def _commit_env(self) -> dict[str, str]:
        env = dict(os.environ)
        name = git("config", "user.name", cwd=self.root, check=False).strip()
        email = git("config", "user.email", cwd=self.root, check=False).strip()
        # A repo without an identity must still be able to record candidates.
        for key, value in _FALLBACK_IDENTITY.items():
            if ("NAME" in key and not name) or ("EMAIL" in key and not email):
                env.setdefault(key, value)
        return env

    def ensure_excluded(self) -> None:
        """Hide `.overnight/` from git status without editing any tracked file."""
        exclude = self._git_dir / "info" / "exclude"
        exclude.parent.mkdir(parents=True, exist_ok=True)
        text = exclude.read_text() if exclude.exists() else ""
        if ".overnight/" not in text.splitlines():
            with exclude.open("a") as fh:
                fh.write(("" if not text or text.endswith("\n") else "\n") + ".overnight/\n")

    def user_head(self) -> str:
        """The commit the user has checked out; the study starts there."""
        out = git("rev-parse", "--verify", "-q", "HEAD^{commit}", cwd=self.root, check=False)
        if not out.strip():
            raise UsageError(
                "the repository has no commits yet; commit your code (including the surface) "
                "so overnight knows where the study starts"
            )
        return out.strip()

    def commit_exists(self, commit: str) -> bool:
        out = git("cat-file", "-t", commit, cwd=self.root, check=False)
        return out.strip() == "commit"

    def branch_head(self) -> str | None:
        out = git("rev-parse", "--verify", "-q", self.branch_ref, cwd=self.root, check=False)
        return out.strip() or None

    def set_branch(self, commit: str, expected_old: str | None = None) -> None:
        """Point the study branch at `commit`; with `expected_old`, only as a fast-forward
        from that value (so a stale controller can never move it backwards)."""
        args = ["update-ref", "-m", "overnight", self.branch_ref, commit]
        if expected_old:
            args.append(expected_old)
        git(*args, cwd=self.root)

    def set_experiment_ref(self, n: int, commit: str) -> None:
        git("update-ref", f"{self.ref_prefix}/{n}", commit, cwd=self.root)

    def experiment_ref(self, n: int) -> str | None:
        ref = f"{self.ref_prefix}/{n}"
        out = git("rev-parse", "--verify", "-q", ref, cwd=self.root, check=False)
        return out.strip() or None

    # -- reading --------------------------------------------------------------------------

    def tracked_files(self, commit: str) -> list[str]:
        out = git("ls-tree", "-r", "-z", "--name-only", commit, cwd=self.root)
        return [p for p in out.split("\0") if p]

    def read_files(self, commit: str, paths: Iterable[str]) -> dict[str, str]:
        """Contents of `paths` at `commit` in one git call; a missing path reads as ''."""
        paths = list(paths)
        if not paths:
            return {}
        spec = "".join(f"{commit}:{p}\n" for p in paths)
        proc = subprocess.run(
            ["git", "cat-file", "--batch"], cwd=self.root, input=spec.encode(), capture_output=True
        )
        data, out, pos = proc.stdout, {}, 0
        for path in paths:
            nl = data.index(b"\n", pos)
            header = data[pos:nl].decode()
            pos = nl + 1
            if header.endswith("missing"):
                out[path] = ""
                continue
            size = int(header.split()[2])
            out[path] = data[pos : pos + size].decode(errors="replace")
            pos += size + 1
        return out

    def diff(self, parent: str, commit: str) -> str:
        return git("diff", "--no-color", parent, commit, cwd=self.root)

    # -- writing candidates ---------------------------------------------------------------

    def _mode(self, commit: str, path: str) -> str:
        # The executable bit of a surface file must survive the edit.
        if path not in self._modes:
            out = git("ls-tree", commit, "--", path, cwd=self.root).split()
            self._modes[path] = out[0] if out else "100644"
        return self._modes[path]

    def make_commit(self, parent: str, files: Mapping[str, str], message: str) -> str:
        """A commit with `files` replaced on top of `parent`, built on a private index."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        env = {**self._env, "GIT_INDEX_FILE": str(self._index)}
        lines = []
        for path, content in files.items():
            blob = git("hash-object", "-w", "--stdin", cwd=self.root, input=content).strip()
            lines.append(f"{self._mode(parent, path)} {blob}\t{path}\n")
        with self._index_lock:
            git("read-tree", parent, cwd=self.root, env=env)
            git("update-index", "--add", "--index-info", cwd=self.root, env=env,
                input="".join(lines))  # fmt: skip
            tree = git("write-tree", cwd=self.root, env=env).strip()
        return git(
            "commit-tree", tree, "-p", parent, "-F", "-", cwd=self.root, env=env, input=message
        ).strip()

    @staticmethod
    def message(description: str, n: int) -> str:
        subject = " ".join(description.split()) or f"experiment {n}"
        return f"{subject}\n\n{TRAILER}: {n}\n"

    @staticmethod
    def three_way(base: str, ours: str, theirs: str) -> str | None:
        """Merge the change base → theirs into ours (git merge-file); None on conflict."""
        with tempfile.TemporaryDirectory(prefix="overnight-merge-") as tmp:
            paths = []
            for name, text in (("ours", ours), ("base", base), ("theirs", theirs)):
                p = Path(tmp) / name
                p.write_text(text)
                paths.append(str(p))
            proc = subprocess.run(["git", "merge-file", "-p", *paths], capture_output=True)
        if proc.returncode != 0:  # >0: conflicts, <0: error
            return None
        return proc.stdout.decode()

    # -- worktrees ------------------------------------------------------------------------

    def worktree_path(self, slot: int) -> Path:
        return self.worktrees_dir / f"{self.study}-{slot}"

    def prepare_worktree(self, slot: int, commit: str, keep: Iterable[str] = ()) -> Path:
        """The slot's worktree, checked out cleanly at `commit` (created on first use).

        `keep` are pathspec-style patterns of untracked files (protected data copies) that a
        clean must not delete."""
        path = self.worktree_path(slot)
        if not (path / ".git").exists():
            with self._worktree_lock:
                if path.exists():  # a half-created worktree from a killed controller
                    shutil.rmtree(path, ignore_errors=True)
                self.worktrees_dir.mkdir(parents=True, exist_ok=True)
                git("worktree", "prune", cwd=self.root)
                git("worktree", "add", "--force", "--detach", str(path), commit, cwd=self.root)
            return path
        git("checkout", "-q", "-f", "--detach", commit, cwd=path)
        args = ["clean", "-fdq"]
        for pattern in keep:
            args += ["-e", pattern]
        git(*args, cwd=path)
        return path

    def changed_tracked(self, worktree: Path) -> list[str]:
        """Tracked files that differ from the checked-out commit (modified or deleted)."""
        out = git("status", "--porcelain", "-z", "--untracked-files=no", cwd=worktree)
        return sorted({entry[3:] for entry in out.split("\0") if len(entry) > 3})

    def remove_worktrees(self) -> None:
        for path in sorted(self.worktrees_dir.glob(f"{self.study}-*")):
            git("worktree", "remove", "--force", str(path), cwd=self.root, check=False)
        git("worktree", "prune", cwd=self.root, check=False)

    # -- recovery -------------------------------------------------------------------------

    def clean_stale_locks(self) -> list[Path]:
        """Remove lock files that a killed controller of THIS study left behind.

        Only our own: the private index, our worktrees' indexes and our refs. The user's
        `.git/index.lock` may belong to a git they are running, so it is never touched."""
        candidates = [self._index.with_suffix(".index.lock")]
        wt_admin = self._git_dir / "worktrees"
        if wt_admin.is_dir():
            candidates += list(wt_admin.glob(f"{self.study}-*/index.lock"))
            candidates += list(wt_admin.glob(f"{self.study}-*/HEAD.lock"))
        candidates.append(self._git_dir / f"{self.branch_ref}.lock")
        ref_dir = self._git_dir / self.ref_prefix
        if ref_dir.is_dir():
            candidates += list(ref_dir.glob("*.lock"))
        removed = []
        for lock in candidates:
            if lock.exists():
                lock.unlink(missing_ok=True)
                removed.append(lock)
        git("worktree", "prune", cwd=self.root, check=False)
        return removed
