"""Git for one study: the branch, candidate commits and refs, and the slot worktrees.

The user's checkout, index and current branch are never touched. Objects, refs and the
slot worktrees are handled in-process through libgit2 (pygit2): a candidate costs about a
millisecond of bookkeeping instead of a dozen git subprocesses. The git CLI is used only
where it is the reference behaviour and rare: creating worktrees, and moving the study
branch by compare-and-swap. Every CLI call runs with hooks disabled, so nothing a run
planted in `.git/hooks` ever executes with the controller's environment.
"""

from __future__ import annotations

import os
import stat
import subprocess
import threading
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from overnight.errors import OvernightError, UsageError
from overnight.isolation import safefs

TRAILER = "Overnight-Experiment"
_FALLBACK_NAME, _FALLBACK_EMAIL = "overnight", "overnight@localhost"
# Options put in front of every git command the controller runs: hooks are never run (a
# run may have written one), and no pager or credential prompt can block the controller.
# The fsmonitor is a command too, named by a config file a run can write without the sandbox.
SAFE_OPTIONS = ("-c", "core.hooksPath=/dev/null", "-c", "core.fsmonitor=false",
                "-c", "core.pager=cat", "-c", "credential.helper=")  # fmt: skip
_BLOB, _EXEC, _LINK = 0o100644, 0o100755, 0o120000


class GitError(OvernightError):
    pass


def git(
    *args: str,
    cwd: Path,
    input: str | bytes | None = None,
    env: Mapping[str, str] | None = None,
    check: bool = True,
) -> str:
    """Run one git command (hooks disabled) and return its stdout (text)."""
    data = input.encode() if isinstance(input, str) else input
    proc = subprocess.run(
        ["git", *SAFE_OPTIONS, *args],
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


def _pygit2() -> Any:
    import pygit2  # the controller's git library; imported only where git work happens

    return pygit2


class Workspace:
    """Git operations of one study, rooted at the repository's top level. Safe to use from
    several threads: each thread gets its own libgit2 handle."""

    def __init__(self, root: Path, study: str) -> None:
        self.root = root
        self.study = study
        self.branch = f"overnight/{study}"
        self.branch_ref = f"refs/heads/{self.branch}"
        self.ref_prefix = f"refs/overnight/{study}"
        self.state_dir = root / ".overnight" / study
        self.worktrees_dir = root / ".overnight" / "worktrees"
        self._local = threading.local()
        self._worktree_lock = threading.Lock()
        self._slots: dict[int | str, Worktree] = {}
        self._git_dir = Path(git("rev-parse", "--git-common-dir", cwd=root).strip())
        if not self._git_dir.is_absolute():
            self._git_dir = (root / self._git_dir).resolve()
        self._signature: tuple[str, str] | None = None

    @property
    def repo(self) -> Any:
        repo = getattr(self._local, "repo", None)
        if repo is None:
            repo = _pygit2().Repository(str(self.root))
            self._local.repo = repo
        return repo

    # -- set-up ---------------------------------------------------------------------------

    def _identity(self) -> tuple[str, str]:
        """Who candidate commits are by: the repo's identity, or overnight's own when the
        repo has none (a fresh clone on a CI machine must still record candidates)."""
        if self._signature is None:
            cfg = self.repo.config
            name = os.environ.get("GIT_AUTHOR_NAME") or _config(cfg, "user.name")
            email = os.environ.get("GIT_AUTHOR_EMAIL") or _config(cfg, "user.email")
            self._signature = (name or _FALLBACK_NAME, email or _FALLBACK_EMAIL)
        return self._signature

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
        try:
            return str(self.repo.revparse_single("HEAD").peel(_pygit2().Commit).id)
        except (KeyError, ValueError, _pygit2().GitError):
            raise UsageError(
                "the repository has no commits yet; commit your code (including the surface) "
                "so overnight knows where the study starts"
            ) from None

    def commit_exists(self, commit: str) -> bool:
        try:
            obj = self.repo.get(commit)
        except (ValueError, _pygit2().GitError):
            return False
        return obj is not None and obj.type_str == "commit"

    def branch_head(self) -> str | None:
        ref = self.repo.references.get(self.branch_ref)
        return str(ref.target) if ref is not None else None

    def set_branch(self, commit: str, expected_old: str | None = None) -> None:
        """Point the study branch at `commit`; with `expected_old`, only as a fast-forward
        from that value (so a stale controller can never move it backwards)."""
        args = ["update-ref", "-m", "overnight", self.branch_ref, commit]
        if expected_old:
            args.append(expected_old)
        git(*args, cwd=self.root)

    def set_experiment_ref(self, n: int, commit: str) -> None:
        self.repo.references.create(f"{self.ref_prefix}/{n}", commit, force=True)

    # -- reading --------------------------------------------------------------------------

    def _commit(self, commit: str) -> Any:
        return self.repo.revparse_single(commit).peel(_pygit2().Commit)

    def _tree(self, treeish: str) -> Any:
        return self.repo.revparse_single(treeish).peel(_pygit2().Tree)

    def tree_id(self, commit: str) -> str:
        """The tree of a commit (or a tree id itself)."""
        return str(self._tree(commit).id)

    def changed_paths(self, old: str, new: str) -> list[str]:
        """Files whose content, mode or presence differs between two commits or trees."""
        diff = self._tree(old).diff_to_tree(self._tree(new))
        return sorted({p for d in diff.deltas for p in (d.old_file.path, d.new_file.path)})

    def tracked_files(self, commit: str) -> list[str]:
        out: list[str] = []

        def walk(tree: Any, prefix: str) -> None:
            for entry in tree:
                path = prefix + entry.name
                if entry.type_str == "tree":
                    walk(self.repo[entry.id], path + "/")
                elif entry.type_str == "blob":
                    out.append(path)

        walk(self._commit(commit).tree, "")
        return sorted(out)

    def read_bytes(self, commit: str, paths: Iterable[str]) -> dict[str, bytes | None]:
        """Contents of `paths` at `commit` (or in a tree); None for a path that is not there."""
        tree = self._tree(commit)
        out: dict[str, bytes | None] = {}
        for path in paths:
            try:
                entry = tree[path]
            except KeyError:
                out[path] = None
                continue
            obj = self.repo[entry.id]
            out[path] = obj.data if obj.type_str == "blob" else None
        return out

    def read_files(self, commit: str, paths: Iterable[str]) -> dict[str, str]:
        """Contents of `paths` at `commit` as text; a missing path reads as ''."""
        return {
            p: (data or b"").decode(errors="replace")
            for p, data in self.read_bytes(commit, paths).items()
        }

    def diff(self, parent: str, commit: str) -> str:
        # No external diff or textconv command: a run could have configured one.
        return git("diff", "--no-color", "--no-ext-diff", "--no-textconv", parent, commit,
                   cwd=self.root)  # fmt: skip

    # -- writing candidates ---------------------------------------------------------------

    def make_commit(self, parent: str, files: Mapping[str, str | bytes], message: str) -> str:
        """A commit with `files` replaced on top of `parent` (modes kept), built in-process."""
        pg = _pygit2()
        repo = self.repo
        base = self._commit(parent)
        tree = _replace(repo, base.tree, {p: _as_bytes(c) for p, c in files.items()})
        name, email = self._identity()
        sig = pg.Signature(name, email)
        return str(repo.create_commit(None, sig, sig, message, tree, [base.id]))

    def tree_with(self, base: str, files: Mapping[str, bytes | None]) -> str:
        """The id of `base`'s tree (a commit or a tree) with `files` written in; a None
        content removes the file (and the directories it leaves empty)."""
        return str(_replace(self.repo, self._tree(base), files))

    def commit_tree(self, tree: str, parent: str, message: str) -> str:
        """A commit of an existing tree on `parent` (finish writes its series with it)."""
        pg = _pygit2()
        name, email = self._identity()
        sig = pg.Signature(name, email)
        tree_oid = self.repo.get(tree).id
        return str(self.repo.create_commit(None, sig, sig, message, tree_oid,
                                           [self._commit(parent).id]))  # fmt: skip

    @staticmethod
    def message(description: str, n: int) -> str:
        subject = " ".join(description.split()) or f"experiment {n}"
        return f"{subject}\n\n{TRAILER}: {n}\n"

    # -- worktrees ------------------------------------------------------------------------

    def worktree_path(self, slot: int | str) -> Path:
        return self.worktrees_dir / f"{self.study}-{slot}"

    def worktree(self, slot: int | str) -> Worktree:
        """The slot's worktree (created on first use)."""
        with self._worktree_lock:
            wt = self._slots.get(slot)
            if wt is None:
                path = self.worktree_path(slot)
                if not (path / ".git").is_file():
                    safefs.remove(path)  # half-created by a killed run
                    self.worktrees_dir.mkdir(parents=True, exist_ok=True)
                    git("worktree", "prune", cwd=self.root)
                    head = self.branch_head() or self.user_head()
                    git("worktree", "add", "--force", "--detach", str(path), head, cwd=self.root)
                wt = self._slots[slot] = Worktree(self, path)
            return wt

    def remove_worktree(self, slot: int | str) -> None:
        with self._worktree_lock:
            self._slots.pop(slot, None)
        git("worktree", "remove", "--force", str(self.worktree_path(slot)), cwd=self.root,
            check=False)  # fmt: skip

    # -- recovery -------------------------------------------------------------------------

    def clean_stale_locks(self) -> list[Path]:
        """Remove lock files that a killed controller of THIS study left behind.

        Only our own: our worktrees' indexes and our refs. The user's `.git/index.lock` may
        belong to a git they are running, so it is never touched."""
        candidates = []
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


class Worktree:
    """One slot's checkout. Between runs it is brought to a candidate by writing only what
    differs from the commit it held (candidates differ in their surface files), and after a
    run it is inspected and cleaned in-process: tracked files the run changed are reported
    and restored, and everything untracked or ignored that the run left (`git clean -x`
    level, `__pycache__` included) is deleted. Symlinks are removed, never followed."""

    def __init__(self, ws: Workspace, path: Path) -> None:
        self.ws = ws
        self.path = path
        self._repo: Any = None
        self.commit: str | None = None  # what the files hold, once known to be clean
        self._index: tuple[int, int, int, int] | None = None  # the index as we wrote it

    @property
    def repo(self) -> Any:
        if self._repo is None:
            self._repo = _pygit2().Repository(str(self.path))
        return self._repo

    def checkout(self, commit: str, keep: Iterable[str] = ()) -> Path:
        """Make the files exactly `commit`'s (plus the untracked `keep` paths)."""
        pg = _pygit2()
        repo = self.repo
        target = repo.revparse_single(commit).peel(pg.Commit)
        if self.commit is None:
            # First use in this process: whatever a killed controller left is wiped.
            repo.checkout_tree(target.tree, strategy=pg.enums.CheckoutStrategy.FORCE)
            repo.set_head(target.id)
            repo.index.read_tree(target.tree)
            repo.index.write()
            self._index = self._index_stamp()
            self.commit = commit
            self.clean(keep)
        elif self.commit != commit:
            old = repo.revparse_single(self.commit).peel(pg.Commit)
            changed = []
            for delta in repo.diff(old.tree, target.tree).deltas:
                path = delta.new_file.path
                if delta.status_char() == "D":
                    safefs.unlink_inside(self.path, path)
                else:
                    self._restore(target.tree, path)
                changed.append(path)
            # The worktree's index keeps the tree it was first checked out at: candidates
            # differ from it only in surface files, so rewriting it (a cost that grows with
            # the repo) would buy nothing; status compares files with it.
            repo.set_head(target.id)
            self.commit = commit
        return self.path

    def status(self) -> tuple[list[str], list[str]]:
        """(tracked files changed or deleted, untracked or ignored paths) right now."""
        pg = _pygit2()
        fs = pg.enums.FileStatus
        tracked_bits = fs.WT_MODIFIED | fs.WT_DELETED | fs.WT_TYPECHANGE | fs.WT_RENAMED
        changed, extra = [], []
        for path, flags in self.repo.status(untracked_files="all", ignored=True).items():
            if flags & (fs.WT_NEW | fs.IGNORED):
                extra.append(path)
            if flags & tracked_bits:
                changed.append(path)
        return sorted(changed), sorted(extra)

    def clean(self, keep: Iterable[str] = ()) -> list[str]:
        """Restore tracked files to the commit and delete everything else (except `keep`):
        what `git checkout -f && git clean -ffdx` would leave, done in-process and never
        through a link. Returns the tracked files that had been changed."""
        assert self.commit is not None
        keep_set = set(keep)
        tree = self.repo.revparse_single(self.commit).peel(_pygit2().Commit).tree
        if self._index_stamp() != self._index:
            # Status trusts the index; a run could have rewritten it (without the sandbox)
            # to make a planted file look tracked. Rebuilt from the commit, every file is
            # compared by content once.
            self.repo.index.read_tree(tree)
            self.repo.index.write()
            self._index = self._index_stamp()
        changed, extra = self.status()
        for path in extra:
            rel = path.rstrip("/")
            if rel in keep_set:
                continue
            if _in_tree(tree, rel):
                # New in this candidate (a surface file the index has not seen): it stays,
                # with the commit's content whatever the run made of it.
                if self._differs(tree, rel):
                    self._restore(tree, rel)
                    changed.append(rel)
                continue
            safefs.unlink_inside(self.path, rel)
        restored = []
        for path in changed:
            if not _in_tree(tree, path):
                safefs.unlink_inside(self.path, path)
            elif self._differs(tree, path):
                # Status compares with the index, which keeps the first checkout's tree:
                # a surface file of this candidate is "modified" there without being so.
                self._restore(tree, path)
            else:
                continue
            restored.append(path)
        return sorted(set(restored))

    def _index_stamp(self) -> tuple[int, int, int, int] | None:
        try:
            st = os.stat(Path(self.repo.path) / "index")
        except OSError:
            return None
        return (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)

    def _restore(self, tree: Any, rel: str) -> None:
        entry = tree[rel]
        try:
            safefs.write_inside(self.path, rel, self.repo[entry.id].data,
                                0o755 if entry.filemode == _EXEC else 0o644,
                                link=entry.filemode == _LINK)  # fmt: skip
        except OSError as exc:
            raise GitError(f"cannot restore {rel}: {exc}") from exc

    def _differs(self, tree: Any, rel: str) -> bool:
        """Whether the file on disk is not the tree's: content, kind or executable bit."""
        entry = tree[rel]
        try:
            st = os.lstat(self.path / rel)
            if entry.filemode == _LINK:
                target = os.readlink(self.path / rel) if stat.S_ISLNK(st.st_mode) else None
                return target is None or os.fsencode(target) != self.repo[entry.id].data
            executable = bool(st.st_mode & 0o100)
            if not stat.S_ISREG(st.st_mode) or executable != (entry.filemode == _EXEC):
                return True
            data = safefs.read_bytes(self.path, rel)
        except OSError:
            return True
        return data != self.repo[entry.id].data


# -- helpers ----------------------------------------------------------------------------------


def _config(cfg: Any, key: str) -> str:
    try:
        return str(cfg[key])
    except KeyError:
        return ""


def _as_bytes(content: str | bytes) -> bytes:
    return content.encode() if isinstance(content, str) else content


def _replace(repo: Any, tree: Any, files: Mapping[str, bytes | None]) -> Any:
    """The id of `tree` with `files` (path -> content, None: removed) written in, building
    only the subtrees on their paths; a file's mode is kept (new files are plain blobs)."""
    pg = _pygit2()
    direct: dict[str, bytes | None] = {}
    nested: dict[str, dict[str, bytes | None]] = {}
    for path, data in files.items():
        head, sep, rest = path.partition("/")
        if sep:
            nested.setdefault(head, {})[rest] = data
        else:
            direct[path] = data
    builder = repo.TreeBuilder(tree) if tree is not None else repo.TreeBuilder()
    for name, data in direct.items():
        old = tree[name] if tree is not None and name in tree else None
        if data is None:
            if old is not None:
                builder.remove(name)
            continue
        mode = old.filemode if old is not None and old.filemode in (_BLOB, _EXEC) else _BLOB
        builder.insert(name, repo.create_blob(data), mode)
    for name, sub in nested.items():
        old = tree[name] if tree is not None and name in tree else None
        subtree = repo[old.id] if old is not None and old.type_str == "tree" else None
        new = _replace(repo, subtree, sub)
        if len(repo[new]):
            builder.insert(name, new, pg.enums.FileMode.TREE)
        elif old is not None:
            builder.remove(name)
    return builder.write()


def _in_tree(tree: Any, path: str) -> bool:
    try:
        return tree[path].type_str == "blob"
    except KeyError:
        return False
