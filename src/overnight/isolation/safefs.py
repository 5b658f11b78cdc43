"""Files a run could have planted, handled without ever following a symbolic link.

A run can leave links anywhere it may write: in its worktree (a protected folder swapped
for a link to elsewhere), in its trace and artifact folders (a trace that is really the
baseline's holdout answers, or `/proc/self/environ`), and without the sandbox in its
experiment folder too. The controller, the trace reader and the dashboard run with more
rights than the run, so everything they open or write under such a place goes through
here: every path component is opened relative to its parent with `O_NOFOLLOW`, so a link
anywhere on the way fails the call instead of leading outside.
"""

from __future__ import annotations

import errno
import os
import shutil
import stat
from collections.abc import Iterator
from pathlib import Path

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)


def _parts(rel: str | os.PathLike[str]) -> list[str]:
    parts = [p for p in Path(rel).parts if p not in ("", ".")]
    if Path(rel).is_absolute() or ".." in parts:
        raise OSError(errno.EPERM, "not a relative path inside its root", str(rel))
    return parts


def _open_dir(root: Path, parts: list[str]) -> int:
    """A descriptor of `root/parts…`, every component opened without following links."""
    fd = os.open(root, _DIR_FLAGS)
    try:
        for part in parts:
            nxt = os.open(part, _DIR_FLAGS, dir_fd=fd)
            os.close(fd)
            fd = nxt
    except BaseException:
        os.close(fd)
        raise
    return fd


def open_read(root: Path, rel: str | os.PathLike[str]) -> int:
    """A read-only descriptor of the regular file `root/rel`. Raises OSError when any
    component is a link (ELOOP/ENOTDIR) or the file is not a regular file (EINVAL): never
    a FIFO that would block, never a device."""
    parts = _parts(rel)
    if not parts:
        raise OSError(errno.EISDIR, "a directory, not a file", str(root))
    dfd = _open_dir(Path(root), parts[:-1])
    try:
        fd = os.open(parts[-1], _READ_FLAGS, dir_fd=dfd)
    finally:
        os.close(dfd)
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise OSError(errno.EINVAL, "not a regular file", str(Path(root, rel)))
    os.set_blocking(fd, True)
    return fd


def read_bytes(root: Path, rel: str | os.PathLike[str], limit: int = -1,
               offset: int = 0) -> bytes:  # fmt: skip
    """Up to `limit` bytes (all: -1) of `root/rel` from `offset`, links refused."""
    with os.fdopen(open_read(root, rel), "rb") as fh:
        if offset:
            fh.seek(offset)
        return fh.read(limit)


def read_text(root: Path, rel: str | os.PathLike[str], limit: int = -1) -> str:
    return read_bytes(root, rel, limit).decode("utf-8", "replace")


def size(root: Path, rel: str | os.PathLike[str]) -> int:
    """Size of the regular file `root/rel` (0 when it is missing, a link or not a file)."""
    try:
        fd = open_read(root, rel)
    except OSError:
        return 0
    try:
        return os.fstat(fd).st_size
    finally:
        os.close(fd)


def link_free(root: Path, path: Path) -> bool:
    """Whether `path` lies inside `root` with no link on the way, itself included."""
    try:
        rel = path.relative_to(root)
    except ValueError:
        return False
    cur = root
    if cur.is_symlink():
        return False
    for part in rel.parts:
        cur = cur / part
        if cur.is_symlink():
            return False
    return True


def walk_files(root: Path) -> Iterator[Path]:
    """Regular files under `root`, sorted per folder; links (to files or folders) are
    neither followed nor listed, and a `root` that is itself a link yields nothing."""
    if root.is_symlink() or not root.is_dir():
        return
    for folder, dirs, files in os.walk(root):  # os.walk never descends into a link
        dirs.sort()
        base = Path(folder)
        for name in sorted(files):
            p = base / name
            with_stat = _lstat(p)
            if with_stat is not None and stat.S_ISREG(with_stat.st_mode):
                yield p


def _lstat(path: Path) -> os.stat_result | None:
    try:
        return os.lstat(path)
    except OSError:
        return None


# -- writing and removing inside a tree a run could have rearranged ------------------------------


def inside(root: Path, rel: str, create: bool = False) -> Path | None:
    """`root/rel`, or None when a parent on the way is not a real directory (say, a link a
    run put there): the controller never writes or deletes through a link. With `create`,
    such a parent is replaced by a real directory first."""
    try:
        parts = _parts(rel)
    except OSError:
        return None
    if not parts:
        return None
    cur = root
    for part in parts[:-1]:
        cur = cur / part
        st = _lstat(cur)
        if st is not None and not stat.S_ISDIR(st.st_mode):
            if not create:
                return None
            cur.unlink()  # a link or a file where a directory belongs
            st = None
        if st is None:
            if not create:
                return None
            cur.mkdir()
    return root.joinpath(*parts)


def remove(path: Path) -> None:
    """Delete a file, a link (not what it points to) or a whole directory."""
    st = _lstat(path)
    if st is None:
        return
    if stat.S_ISDIR(st.st_mode):
        # rmtree never follows links inside the tree; an unreadable folder (chmod 000)
        # is made readable first so a run cannot make its leftovers undeletable.
        def unlock(_func: object, p: str, _exc: object) -> None:
            try:
                os.chmod(p, 0o700, follow_symlinks=False)
                parent = os.path.dirname(p)
                os.chmod(parent, 0o700, follow_symlinks=False)
            except OSError:
                pass

        for _ in range(3):
            shutil.rmtree(path, onerror=unlock)
            if _lstat(path) is None:
                return
        return
    path.unlink(missing_ok=True)


def unlink_inside(root: Path, rel: str) -> None:
    """Remove `root/rel` (when no link leads there) and the folders it leaves empty."""
    target = inside(root, rel)
    if target is None:
        return
    remove(target)
    parent = target.parent
    while parent != root and parent.is_dir() and not parent.is_symlink():
        try:
            parent.rmdir()
        except OSError:
            break
        parent = parent.parent


def _target(root: Path, rel: str) -> Path:
    target = inside(root, rel, create=True)
    if target is None:
        raise OSError(errno.EPERM, "cannot write outside its root", str(Path(root, rel)))
    st = _lstat(target)
    if st is not None and (stat.S_ISDIR(st.st_mode) or stat.S_ISLNK(st.st_mode)):
        remove(target)
    return target


def _write_new(target: Path, mode: int, chunks: Iterator[bytes]) -> None:
    tmp = target.with_name(f".{target.name}.overnight-tmp")
    remove(tmp)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
    with os.fdopen(fd, "wb") as fh:
        for chunk in chunks:
            fh.write(chunk)
    os.chmod(tmp, mode)
    os.replace(tmp, target)


def write_inside(root: Path, rel: str, data: bytes, mode: int = 0o644,
                 link: bool = False) -> None:  # fmt: skip
    """Write `root/rel` atomically as a regular file with `mode` (or, with `link`, as a
    symbolic link whose target is `data`), replacing links and folders on the way."""
    target = _target(root, rel)
    if link:
        target.unlink(missing_ok=True)
        os.symlink(data.decode(errors="replace"), target)
        return
    _write_new(target, mode, iter([data]))


def copy_inside(src: Path, root: Path, rel: str) -> None:
    """Copy the trusted file `src` to `root/rel` (never through a link), keeping its mode
    and times as shutil.copy2 does."""
    st = os.stat(src)
    target = _target(root, rel)
    with src.open("rb") as fh:
        _write_new(target, stat.S_IMODE(st.st_mode), iter(lambda: fh.read(1 << 20), b""))
    os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns), follow_symlinks=False)


def create_log(path: Path) -> int:
    """A fresh file for a log, opened for writing: whatever a run left at `path` (a link,
    a FIFO, a file it pre-filled) is removed first, never opened."""
    remove(path)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
    return os.open(path, flags, 0o644)
