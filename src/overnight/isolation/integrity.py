"""Integrity: only the surface may change, locked files stay byte-identical."""

from __future__ import annotations

import fnmatch
import hashlib
import os
import stat
from collections.abc import Iterable, Mapping
from pathlib import Path

from overnight.isolation import safefs


def surface_hash(files: Mapping[str, str]) -> str:
    """Identity of a whole surface, to spot a candidate that was already measured."""
    h = hashlib.sha256()
    for path in sorted(files):
        h.update(path.encode() + b"\0" + files[path].encode() + b"\0")
    return h.hexdigest()


def _matches(path: str, patterns: Iterable[str]) -> bool:
    for pattern in patterns:
        if fnmatch.fnmatchcase(path, pattern):
            return True
        if pattern.endswith("/**") and path.startswith(pattern[:-2]):
            return True
    return False


def outside_surface(paths: Iterable[str], surface: Iterable[str]) -> list[str]:
    """The paths that are not part of the surface (by exact path or glob)."""
    surface = list(surface)
    return sorted(p for p in paths if p not in surface and not _matches(p, surface))


def file_digest(path: Path) -> str:
    """sha256 of a file's bytes, read in chunks."""
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


class ProtectedFiles:
    """Untracked files named by `protect` (data, caches of the evaluation).

    Worktrees don't get untracked files from git, so each is copied from the user's checkout
    into the slot worktree, and verified after every run: by stat first (cheap), by hash when
    the stat changed."""

    def __init__(self, root: Path, patterns: Iterable[str], tracked: Iterable[str]) -> None:
        self.root = root
        self.patterns = list(patterns)
        tracked_set = set(tracked)
        found: set[str] = set()
        for pattern in self.patterns:
            for hit in root.glob(pattern):
                # `data/**` globs directories only (Python 3.11): take their files too.
                for p in [hit] if hit.is_file() else hit.rglob("*"):
                    rel = p.relative_to(root).as_posix()
                    if p.is_file() and not rel.startswith((".git/", ".overnight/")):
                        found.add(rel)
        # Tracked files are already locked through git itself.
        self.files = sorted(found - tracked_set)
        self.reference = {rel: file_digest(root / rel) for rel in self.files}
        self._stats: dict[tuple[Path, str], tuple[int, int, int]] = {}

    def __bool__(self) -> bool:
        return bool(self.files)

    def keep_patterns(self) -> list[str]:
        return list(self.files)

    def sync(self, worktree: Path) -> None:
        """Make the worktree's copies identical to the user's originals. A copy is written
        only as a regular file inside the worktree: a folder on its way that a run swapped
        for a link is replaced by a real folder, never written through."""
        for rel in self.files:
            st = self._stat(worktree, rel)
            if st is not None and self._stats.get((worktree, rel)) == st:
                continue
            if st is None or self._digest_in(worktree, rel) != self.reference[rel]:
                safefs.copy_inside(self.root / rel, worktree, rel)
            self._stats[(worktree, rel)] = self._stat(worktree, rel)  # type: ignore[assignment]

    def changed(self, worktree: Path) -> list[str]:
        out = []
        for rel in self.files:
            st = self._stat(worktree, rel)
            if st is not None and self._stats.get((worktree, rel)) == st:
                continue
            if st is None or self._digest_in(worktree, rel) != self.reference[rel]:
                out.append(rel)
        return out

    @staticmethod
    def _digest_in(worktree: Path, rel: str) -> str | None:
        """The hash of the regular file `worktree/rel`; None when a link is on the way."""
        try:
            fd = safefs.open_read(worktree, rel)
        except OSError:
            return None
        h = hashlib.sha256()
        with os.fdopen(fd, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
        return h.hexdigest()

    @staticmethod
    def _stat(worktree: Path, rel: str) -> tuple[int, int, int, int] | None:
        """Size, mtime, ctime and inode of `worktree/rel`; None when it is missing or a link
        is on the way. The ctime is in it because no process can set it: a file rewritten
        and given back its old mtime still counts as touched."""
        if safefs.inside(worktree, rel) is None:
            return None
        try:
            st = os.lstat(worktree / rel)
        except FileNotFoundError:
            return None
        if not stat.S_ISREG(st.st_mode):
            return None
        return (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)
