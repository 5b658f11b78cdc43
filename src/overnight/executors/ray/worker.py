"""The worker side of the Ray executor: what runs on a cluster node, inside one Ray task.

Nothing here may rely on the controller's filesystem. The study's start tree arrives once
per node through Ray's object store and is cached under the node's work dir, keyed by its
hash; each task brings only the candidate's surface files; everything the run produced
(report, logs, traces, artifacts) goes back in the return value. Only plain dicts, strings
and bytes cross the boundary, so nothing depends on both sides pickling the same classes.

Also the `guard` entry point (`python -m overnight.executors.ray.worker guard …`): a small
detached process per run that kills the run's processes when the Ray worker running it dies
(SIGKILL, OOM, `ray.cancel(force=True)`), which the worker itself cannot do any more.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import select
import shutil
import socket
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from overnight.isolation import integrity, safefs
from overnight.isolation.runner import MARKER_VAR, kill_marked

# Bumped whenever the dicts exchanged with the controller change shape.
PROTOCOL = 2
LOG_CAP = 8 * 1024 * 1024  # bytes of each log sent back: head and tail, the middle cut
DIR_CAP = 64 * 1024 * 1024  # bytes of traces (and of artifacts) sent back per run
# Beyond the budgets of all its commands, how long a run may go on before the guard kills
# it anyway (a hung worker that no longer enforces the budget).
GUARD_GRACE_S = 120.0
# Variables that describe the machine rather than the study: a value from the controller's
# machine would be wrong on a node, so they come from the node (or are dropped).
NODE_LOCAL_ENV = (
    "PATH", "HOME", "USER", "LOGNAME", "SHELL", "TMPDIR", "HOSTNAME", "PWD", "OLDPWD",
    "VIRTUAL_ENV", "CONDA_PREFIX", "CONDA_DEFAULT_ENV", "LD_LIBRARY_PATH",
    "CUDA_VISIBLE_DEVICES",  # Ray assigns GPUs per task on the node
)  # fmt: skip
DIR_VARS = ("OVERNIGHT_TRACE_DIR", "OVERNIGHT_ARTIFACT_DIR")
# Cached trees and run copies untouched this long are deleted when a new tree is unpacked.
STALE_S = 7 * 86400

StatKey = tuple[int, int, int, int, int]


class ProtocolMismatch(RuntimeError):
    """The controller and this node run overnight versions that do not understand each
    other; the controller then ships its own code to the cluster and retries."""


def workdir() -> Path:
    root = os.environ.get("OVERNIGHT_RAY_WORKDIR") or tempfile.gettempdir()
    return Path(root) / "overnight-ray"


# -- hashing and stats ----------------------------------------------------------------------


def data_digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def file_digest(path: Path) -> str | None:
    """What the manifest records for a path: sha256 of a file, `link:<target>` of a link."""
    try:
        if path.is_symlink():
            return "link:" + os.readlink(path)
        return integrity.file_digest(path)
    except OSError:
        return None


def stat_key(path: Path) -> StatKey | None:
    # ctime is in the key because no process can set it: a file rewritten and given back
    # its old mtime still shows up as changed.
    try:
        st = os.lstat(path)
    except OSError:
        return None
    return (st.st_mode, st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)


def changed_files(root: Path, manifest: dict[str, str], before: dict[str, StatKey]) -> list[str]:
    """Manifest paths under `root` whose content differs (by stat first, by hash if needed)."""
    out = []
    for rel, digest in manifest.items():
        st = stat_key(root / rel)
        if st is not None and st == before.get(rel):
            continue
        if st is None or file_digest(root / rel) != digest:
            out.append(rel)
    return sorted(out)


def extract_all(data: bytes, dest: Path, trusted: bool) -> None:
    """Unpack a tar. Never outside `dest`; untrusted (written by a run): no links either."""
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        if hasattr(tarfile, "data_filter"):  # Python >= 3.11.4
            tar.extractall(dest, filter="tar" if trusted else "data")
            return
        members = [
            m for m in tar.getmembers()
            if not m.name.startswith("/") and ".." not in Path(m.name).parts
            and (m.isfile() or m.isdir() or (trusted and m.issym()))
        ]  # fmt: skip
        tar.extractall(dest, members=members)


def reset_copy(
    repo: Path, base: Path, manifest: dict[str, str], files: dict[str, str],
    before: dict[str, StatKey],
) -> list[str]:  # fmt: skip
    """Bring a run's copy back to the candidate between two of its commands, as the local
    executor does with its worktree: locked files restored from the verified base, the
    candidate's surface files rewritten, everything else the command left (new modules,
    `__pycache__`, links) deleted, never followed. Returns the paths that had changed."""
    changed = changed_files(repo, manifest, before)
    for rel in changed:
        digest = manifest[rel]
        if digest.startswith("link:"):
            safefs.write_inside(repo, rel, digest[5:].encode(), link=True)
        else:
            safefs.copy_inside(base / rel, repo, rel)
        if (st := stat_key(repo / rel)) is not None:
            before[rel] = st
    for rel, content in files.items():
        data = content.encode()
        try:
            same = safefs.read_bytes(repo, rel) == data
        except OSError:
            same = False
        if not same:
            safefs.write_inside(repo, rel, data)
            changed.append(rel)
    expected = set(manifest) | set(files)
    folders = {str(Path(rel).parent) for rel in expected}
    folders |= {str(p) for rel in expected for p in Path(rel).parents}
    for folder, dirs, names in os.walk(repo):  # never descends into a link
        here = Path(folder)
        for name in [*names, *dirs]:
            rel = (here.relative_to(repo) / name).as_posix()
            if rel in expected:
                continue  # a locked file or link, or a surface file
            is_dir = name in dirs
            if is_dir and rel in folders and not (here / name).is_symlink():
                continue  # a folder on the way to expected files
            safefs.remove(here / name)
            if is_dir:
                dirs.remove(name)
    return sorted(set(changed))


# -- the base tree, cached per node ---------------------------------------------------------

_lock = threading.Lock()
# Per worker process: base key -> the stat of every manifest file once its hash was verified.
_verified: dict[str, dict[str, StatKey]] = {}


def _prune(now: float) -> None:
    # Trees of finished studies, and copies of runs whose guard died with the node.
    for parent in (workdir() / "base", workdir() / "runs"):
        for old in parent.glob("*") if parent.is_dir() else []:
            with contextlib.suppress(OSError):
                if now - old.stat().st_mtime > STALE_S:
                    shutil.rmtree(old, ignore_errors=True)


def _extract(data: bytes, dest: Path) -> None:
    """Unpack `data` as `dest`, atomically: a half-written cache is never used."""
    _prune(time.time())
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.parent / f".tmp-{uuid.uuid4().hex}"
    extract_all(data, tmp, trusted=True)  # our own tar of the user's repo
    trash = None
    if dest.exists():
        trash = dest.parent / f".trash-{uuid.uuid4().hex}"
        os.rename(dest, trash)
    try:
        os.rename(tmp, dest)
    except OSError:  # another worker process on this node won the race: use its copy
        shutil.rmtree(tmp, ignore_errors=True)
    if trash is not None:
        shutil.rmtree(trash, ignore_errors=True)


def _verify(base: Path, manifest: dict[str, str]) -> dict[str, StatKey] | None:
    stats: dict[str, StatKey] = {}
    for rel, digest in manifest.items():
        st = stat_key(base / rel)
        if st is None or file_digest(base / rel) != digest:
            return None
        stats[rel] = st
    return stats


def ensure_base(key: str, manifest: dict[str, str], fetch: Callable[[], bytes]) -> Path:
    """The node's cached copy of base `key`, verified against `manifest`; (re-)extracted from
    `fetch()` when it is missing or was changed (a run can reach the cache by absolute path)."""
    base = workdir() / "base" / key
    with _lock:
        known = _verified.get(key)
        if known is not None and base.is_dir():
            if not changed_files(base, manifest, known):
                # Files whose stat moved but whose hash still matches: remember the new stat.
                _verified[key] = {rel: stat_key(base / rel) or known[rel] for rel in manifest}
                os.utime(base)  # in use: not stale
                return base
        elif base.is_dir():  # extracted by another worker process on this node
            stats = _verify(base, manifest)
            if stats is not None:
                _verified[key] = stats
                return base
        _extract(fetch(), base)
        stats = _verify(base, manifest)
        if stats is None:
            raise RuntimeError(f"base tree {key[:12]} does not match its manifest once unpacked")
        _verified[key] = stats
        return base


# -- output going back ----------------------------------------------------------------------


def capped_bytes(path: Path, cap: int = LOG_CAP) -> bytes:
    """The file, or its head and tail with the cut marked when it is over `cap` bytes."""
    try:
        size = path.stat().st_size
        with path.open("rb") as fh:
            if size <= cap:
                return fh.read()
            head = fh.read(cap // 4)
            fh.seek(size - (cap - cap // 4))
            tail = fh.read()
    except OSError:
        return b""
    cut = size - len(head) - len(tail)
    return head + f"\n... [{cut} bytes cut on the Ray node] ...\n".encode() + tail


def pack_dir(path: Path, cap: int = DIR_CAP) -> bytes:
    """Regular files under `path` as a gzipped tar, up to `cap` bytes of content; the rest
    is listed in OMITTED.txt. Empty bytes for an empty or missing dir."""
    files = sorted(safefs.walk_files(path))  # never through a link (the folder's own too)
    if not files:
        return b""
    buf = io.BytesIO()
    total, omitted = 0, []
    with tarfile.open(fileobj=buf, mode="w:gz", compresslevel=1) as tar:
        for p in files:
            rel = p.relative_to(path).as_posix()
            size = p.stat().st_size
            if total + size > cap:
                omitted.append(f"{rel}\t{size}")
                continue
            total += size
            tar.add(p, arcname=rel, recursive=False)
        if omitted:
            note = "over the size cap, left on the node and deleted:\n" + "\n".join(omitted)
            info = tarfile.TarInfo("OMITTED.txt")
            info.size = len(note.encode())
            tar.addfile(info, io.BytesIO(note.encode()))
    return buf.getvalue()


# -- the guard ------------------------------------------------------------------------------


def start_guard(prefix: str, run_dir: Path, timeout_s: float) -> subprocess.Popen[bytes] | None:
    """A detached process that, once our end of its stdin closes (normally, or because this
    worker died), kills every process marked `prefix` and deletes `run_dir`."""
    env = {k: v for k, v in os.environ.items() if k != MARKER_VAR}
    # The package may come from Ray's py_modules, which only this process's sys.path knows.
    pkg_parent = str(Path(__file__).resolve().parents[3])
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [pkg_parent, env.get("PYTHONPATH")]))
    argv = [sys.executable, "-m", "overnight.executors.ray.worker", "guard", prefix,
            str(run_dir), f"{timeout_s:.0f}"]  # fmt: skip
    try:
        return subprocess.Popen(
            argv, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            env=env, start_new_session=True, close_fds=True,
        )  # fmt: skip
    except OSError:
        return None


def guard_main(prefix: str, run_dir: str, timeout_s: float) -> None:
    # Returns on EOF (the worker is done, or dead) or when the run is long overdue.
    select.select([sys.stdin], [], [], timeout_s)
    kill_marked(prefix)
    shutil.rmtree(run_dir, ignore_errors=True)


# -- one task -------------------------------------------------------------------------------


def _node() -> tuple[str, str]:
    node = ""
    ray = sys.modules.get("ray")  # imported by the Ray worker; absent in unit tests
    if ray is not None and ray.is_initialized():
        node = ray.get_runtime_context().get_node_id()
    return node, socket.gethostname()


def _env(task_env: dict[str, str], run_dir: Path, inputs: dict[str, bytes]) -> dict[str, str]:
    env = dict(task_env)
    for name in NODE_LOCAL_ENV:
        if name in os.environ:
            env[name] = os.environ[name]
        else:
            env.pop(name, None)
    for var, sub in zip(DIR_VARS, ("traces", "artifacts"), strict=True):
        env[var] = str(run_dir / sub)
        (run_dir / sub).mkdir(parents=True, exist_ok=True)
        if inputs.get(var):
            extract_all(inputs[var], run_dir / sub, trusted=False)
    return env


def _fetch_from(ref_box: list[Any]) -> Callable[[], bytes]:
    def fetch() -> bytes:
        import ray

        return ray.get(ref_box[0])

    return fetch


def run_task(spec: dict[str, Any], fetch: Callable[[], bytes] | None = None) -> dict[str, Any]:
    """Run one task described by `spec` (see RayExecutor._spec) and return what it produced.

    `fetch` returns the base tar; by default it is read from the object store, and only
    when this node has no verified copy yet."""
    if spec.get("protocol") != PROTOCOL:
        raise ProtocolMismatch(f"controller protocol {spec.get('protocol')}, node {PROTOCOL}")
    t0 = time.monotonic()
    task = spec["task"]
    base = ensure_base(spec["base_key"], spec["manifest"], fetch or _fetch_from(spec["base_ref"]))
    run_dir = workdir() / "runs" / uuid.uuid4().hex
    repo = run_dir / "repo"
    marker = f"{task['marker']}@{spec['attempt']}"
    budget = float(task["budget_s"])
    guard = start_guard(marker + ":", run_dir, budget * len(task["commands"]) + GUARD_GRACE_S)
    try:
        shutil.copytree(base, repo, symlinks=True)
        for rel in spec["remove"]:
            (repo / rel).unlink(missing_ok=True)
        for rel, content in spec["files"].items():
            (repo / rel).parent.mkdir(parents=True, exist_ok=True)
            (repo / rel).write_bytes(content.encode())
        before = {rel: st for rel in spec["manifest"] if (st := stat_key(repo / rel))}
        env = _env(task["env"], run_dir, spec.get("inputs", {}))
        setup_s = time.monotonic() - t0
        reset_changes: set[str] = set()

        def between(_label: str) -> None:
            reset_changes.update(reset_copy(repo, base, spec["manifest"], spec["files"], before))

        steps, logs = _run_commands(task, repo, run_dir / "logs", env, marker, between)
        changed = reset_changes | set(changed_files(repo, spec["manifest"], before))
        report = {"steps": steps, "changed": sorted(changed)}
        node, host = _node()
        return {
            "protocol": PROTOCOL,
            "report": report,
            "logs": logs,
            "dirs": {var: pack_dir(Path(env[var])) for var in DIR_VARS},
            "node": node,
            "host": host,
            "setup_s": setup_s,
        }
    finally:
        if guard is not None and guard.stdin is not None:
            guard.stdin.close()  # the guard cleans up in the background
        else:
            kill_marked(marker + ":")
            shutil.rmtree(run_dir, ignore_errors=True)


def _run_commands(
    task: dict[str, Any], repo: Path, logs_dir: Path, env: dict[str, str], marker: str,
    between: Callable[[str], None] | None = None,
) -> tuple[list[dict[str, Any]], dict[str, bytes]]:
    """The task's commands through the same loop as the local executor's (executors/steps),
    and their logs (head and tail when huge) to send back."""
    from dataclasses import asdict

    from overnight.executors.base import RunTask
    from overnight.executors.steps import run_steps

    run_task_ = RunTask(**{**task, "commands": [tuple(c) for c in task["commands"]],
                           "marker": marker})  # fmt: skip
    steps = run_steps(run_task_, repo, env, logs_dir, between=between)
    logs: dict[str, bytes] = {}
    out = []
    for step in steps:
        for path in (Path(step.stdout), Path(step.stderr)):
            logs[path.name] = capped_bytes(path)
        out.append({**asdict(step), "stdout": Path(step.stdout).name,
                    "stderr": Path(step.stderr).name})  # fmt: skip
    return out, logs


def probe() -> int:
    """Answers the controller's question: can this node run our side, and which version?"""
    return PROTOCOL


def reap(prefix: str) -> int:
    """Kill what earlier runs of a study left on this node (run by `RayExecutor.recover`)."""
    return kill_marked(prefix)


if __name__ == "__main__" and sys.argv[1:2] == ["guard"]:
    guard_main(sys.argv[2], sys.argv[3], float(sys.argv[4]))
