"""Run one shell command under a wall-clock budget; nothing it started may survive it.

The command runs under a per-run reaper (isolation/reaper.py), a child subreaper that
adopts every orphan of the run, so a double-forked `setsid()` daemon that cleared its
environment stays a descendant. Three more nets catch the processes of a run, because each
alone has holes (and the reaper exists only on Linux):
- descendants seen while polling (catches children that cleared their environment),
- the process group (catches what was forked between two polls and stayed in the group),
- the environment marker `OVERNIGHT_RUN_MARKER=<marker>`, inherited by everything the run
  starts (catches double-forked `setsid()` daemons that were never seen as descendants).
"""

from __future__ import annotations

import contextlib
import math
import os
import select
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from overnight.errors import OvernightError
from overnight.isolation.capture import LOG_CAP, Capture, human, output_tail
from overnight.isolation.reaper import reaper_prefix
from overnight.isolation.secrets import looks_secret

MARKER_VAR = "OVERNIGHT_RUN_MARKER"

# Tracking descendants costs a walk of the tree; this is its period and the worst-case
# delay before a stop request is noticed.
POLL_S = 0.05
# How long the last round of SIGKILLs may take before we give up on a process (one in
# uninterruptible sleep, e.g. stuck on a dead NFS mount, cannot be killed at all).
KILL_WAIT_S = 5.0


def scrub_env(
    base: Mapping[str, str], pass_env: Sequence[str] = (), drop: Iterable[str] = ()
) -> dict[str, str]:
    """`base` without secret-looking variables (unless in `pass_env`) and without `drop`."""
    keep, dropped = set(pass_env), set(drop)
    return {
        name: value
        for name, value in base.items()
        if name not in dropped
        and (name in keep or not looks_secret(name))
    }


# Without an explicit `[sandbox] memory`, a run may use this share of the machine's memory
# (resident, summed over its processes) before it is killed: enough for any run meant to
# fit, and the controller that records the night keeps room to work.
AUTO_MEMORY_SHARE = 0.9


def auto_memory_limit() -> int:
    """The default memory limit of a run on this machine, in bytes."""
    return int(psutil.virtual_memory().total * AUTO_MEMORY_SHARE)


@dataclass
class RunOutcome:
    exit_code: int | None  # negative: killed by that signal (subprocess convention)
    timed_out: bool
    interrupted: bool
    wall_s: float
    stdout_path: Path
    stderr_path: Path
    output_tail: str
    # Why the runner killed it besides the budget ("memory …"), and the log caps applied.
    killed_because: str = ""
    notes: list[str] = field(default_factory=list)


# --- finding processes -------------------------------------------------------------------


def _protected_pids() -> set[int]:
    # Never kill ourselves or our ancestors, even when they carry a marker themselves (an
    # overnight controller running inside another overnight run).
    pids = {os.getpid()}
    with contextlib.suppress(psutil.Error):
        pids.update(p.pid for p in psutil.Process().parents())
    return pids


def _marked_pids(needle: bytes, exact: bool) -> list[int]:
    """Pids whose environment has `OVERNIGHT_RUN_MARKER=<needle>` (or a value starting so)."""
    if not os.path.isdir("/proc"):
        value = needle.decode()
        found = []
        for proc in psutil.process_iter():
            with contextlib.suppress(psutil.Error):
                seen = proc.environ().get(MARKER_VAR)
                if seen is not None and (seen == value if exact else seen.startswith(value)):
                    found.append(proc.pid)
        return found
    # Reading /proc directly costs ~0.5 ms for a hundred processes; psutil.environ() parses
    # every environment into a dict and is several times slower.
    pattern = b"\0" + MARKER_VAR.encode() + b"=" + needle + (b"\0" if exact else b"")
    found = []
    for name in filter(str.isdigit, os.listdir("/proc")):
        # OSError: the process is gone, or it is another user's.
        with contextlib.suppress(OSError), open(f"/proc/{name}/environ", "rb") as fh:
            if pattern in b"\0" + fh.read():
                found.append(int(name))
    return found


# /proc/<pid>/task/<tid>/children costs in proportion to the tree, where psutil's
# children() reads every process on the machine; it needs CONFIG_PROC_CHILDREN.
_PROC_CHILDREN = os.path.exists(f"/proc/{os.getpid()}/task/{os.getpid()}/children")


def _children(pid: int) -> list[int]:
    if not _PROC_CHILDREN:
        try:
            return [p.pid for p in psutil.Process(pid).children()]
        except psutil.Error:
            return []
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return []
    kids: list[int] = []
    for tid in tids:  # a child belongs to the thread that forked it
        with contextlib.suppress(OSError), open(f"/proc/{pid}/task/{tid}/children") as fh:
            kids.extend(int(k) for k in fh.read().split())  # OSError: thread or process gone
    return kids


def _descendants(roots: Iterable[int]) -> set[int]:
    """All descendants of `roots` (one walk with a shared visited set)."""
    todo = list(roots)
    found: set[int] = set()
    while todo:
        for kid in _children(todo.pop()):
            if kid not in found:
                found.add(kid)
                todo.append(kid)
    return found


def _alive(proc: psutil.Process) -> bool:
    # A zombie is dead for our purpose: it runs nothing, and if init does not reap orphans
    # (a container's PID 1 often does not) it would never go away.
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _signal(procs: Iterable[psutil.Process], sig: int) -> None:
    for proc in procs:
        with contextlib.suppress(psutil.Error, OSError):
            proc.send_signal(sig)  # psutil refuses if the pid was reused meanwhile


def _wait_gone(procs: list[psutil.Process], timeout: float) -> list[psutil.Process]:
    deadline = time.monotonic() + timeout
    delay = 0.001
    while True:
        procs = [p for p in procs if _alive(p)]
        if not procs or time.monotonic() >= deadline:
            return procs
        time.sleep(min(delay, max(0.0, deadline - time.monotonic())))
        delay = min(delay * 2, 0.02)


def _terminate(
    collect: Callable[[], list[psutil.Process]],
    grace_s: float,
    killpg: Callable[[int], None] = lambda sig: None,
) -> int:
    """SIGTERM what `collect` finds, wait `grace_s`, then SIGKILL until nothing is left.

    Returns how many processes the first collection found.
    """
    live = collect()
    first = len(live)
    if not live:
        return 0
    killpg(signal.SIGTERM)
    _signal(live, signal.SIGTERM)
    _wait_gone(live, grace_s)
    deadline = time.monotonic() + KILL_WAIT_S
    # Repeated rounds because a process may fork between being found and being killed.
    while (live := collect()) and time.monotonic() < deadline:
        killpg(signal.SIGKILL)
        _signal(live, signal.SIGKILL)
        _wait_gone(live, min(0.5, max(0.0, deadline - time.monotonic())))
    return first


# --- the tree of one run -----------------------------------------------------------------


class _Tree:
    """Every process a run started, as far as can be known, and how to kill them all."""

    def __init__(self, root: subprocess.Popen[bytes], marker: str) -> None:
        self.root = root
        self.pgid = root.pid  # start_new_session makes the root the group leader
        self.needle = marker.encode()
        self.seen: dict[int, psutil.Process] = {}
        self.protected = _protected_pids()
        self._remember([root.pid])
        try:
            self.pidfd: int | None = os.pidfd_open(root.pid)
        except (AttributeError, OSError):  # not Linux, an old kernel, or a sandbox forbids it
            self.pidfd = None

    def wait_exit(self, timeout: float) -> bool:
        """Wait up to `timeout` for the root to exit; True once it has (and is reaped)."""
        if self.pidfd is not None:
            # Wakes the moment the root exits instead of sleeping in a poll loop; poll()
            # rather than select() because select() fails on descriptors above 1023.
            poller = select.poll()
            poller.register(self.pidfd, select.POLLIN)
            if not poller.poll(max(0, math.ceil(timeout * 1000))):
                return False
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.root.wait(timeout=max(0.0, timeout))
            return True
        return False

    def _remember(self, pids: Iterable[int]) -> None:
        for pid in pids:
            if pid in self.seen or pid in self.protected:
                continue
            with contextlib.suppress(psutil.Error):
                self.seen[pid] = psutil.Process(pid)

    def track(self) -> None:
        current = _descendants([self.root.pid])
        # Forget the dead so that a run spawning many short-lived processes stays cheap;
        # orphans still alive (re-parented daemons) are exactly the ones worth keeping.
        for pid in [pid for pid in self.seen if pid not in current]:
            if not _alive(self.seen[pid]):
                del self.seen[pid]
        self._remember(current)

    def _group_pids(self) -> list[int]:
        try:
            os.killpg(self.pgid, 0)
        except OSError:
            return []  # the usual case: the group is empty, no need to scan
        pids = []
        for proc in psutil.process_iter():
            with contextlib.suppress(psutil.Error, OSError):
                if os.getpgid(proc.pid) == self.pgid:
                    pids.append(proc.pid)
        return pids

    def collect(self) -> list[psutil.Process]:
        """The live processes of the run, found through all three nets."""
        if self.root.returncode is None:
            self.track()
        self._remember(_descendants([p.pid for p in self.seen.values() if _alive(p)]))
        self._remember(_marked_pids(self.needle, exact=True))
        self._remember(self._group_pids())
        live = [p for p in self.seen.values() if _alive(p)]
        self.seen = {p.pid: p for p in live}
        return live

    def rss(self) -> int:
        """Resident memory of the run's live processes (as last tracked), in bytes."""
        total = 0
        for proc in list(self.seen.values()):
            with contextlib.suppress(psutil.Error):
                total += proc.memory_info().rss
        return total

    def _killpg(self, sig: int) -> None:
        with contextlib.suppress(OSError):
            os.killpg(self.pgid, sig)

    def kill(self, grace_s: float) -> None:
        """SIGTERM everything, give it `grace_s` to exit, then SIGKILL until none is left."""
        _terminate(self.collect, grace_s, self._killpg)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.root.wait(timeout=KILL_WAIT_S)
        if self.pidfd is not None:
            os.close(self.pidfd)
            self.pidfd = None


def run_command(
    command: str,
    *,
    cwd: Path,
    env: Mapping[str, str],
    budget_s: float,
    stdout_path: Path,
    stderr_path: Path,
    marker: str,
    stop: threading.Event | None = None,
    wrap: Sequence[str] = (),
    grace_s: float = 0.5,
    max_rss: int | None = None,
    log_cap: int = LOG_CAP,
) -> RunOutcome:
    """Run `command` with bash in `cwd`; kill its whole tree at `budget_s`, on `stop`, or
    once its processes hold more than `max_rss` bytes of memory. Its output goes to the two
    log files through pipes, at most `log_cap` bytes of each kept (head and tail)."""
    if not marker:
        raise ValueError("run_command needs a non-empty marker")
    stdout_path, stderr_path = Path(stdout_path), Path(stderr_path)
    inner = [*wrap, "/bin/bash", "-c", command]
    if shutil.which(inner[0]) is None:  # the reaper would only report it as exit 127
        raise OvernightError(f"cannot start the run ({inner[0]} in {cwd}): not found")
    argv = [*reaper_prefix(os.getpid(), grace_s), *inner]
    start = time.monotonic()
    capture = Capture(stdout_path, stderr_path, log_cap)
    try:
        proc = subprocess.Popen(
            argv, cwd=cwd, env={**env, MARKER_VAR: marker}, stdin=subprocess.DEVNULL,
            stdout=capture.child_fds[0], stderr=capture.child_fds[1], start_new_session=True,
        )  # fmt: skip
    except OSError as exc:
        capture.close()
        raise OvernightError(f"cannot start the run ({argv[0]} in {cwd}): {exc}") from exc
    capture.start()
    tree = _Tree(proc, marker)
    deadline = start + budget_s
    timed_out = interrupted = False
    why = ""
    try:
        while not tree.wait_exit(min(POLL_S, deadline - time.monotonic())):
            if stop is not None and stop.is_set():
                interrupted = True
                break
            if time.monotonic() >= deadline:
                timed_out = True
                break
            tree.track()
            if max_rss is not None and (used := tree.rss()) > max_rss:
                why = (f"killed: its processes held {human(used)} of memory, over the limit "
                       f"of {human(max_rss)}")  # fmt: skip
                break
        wall_s = time.monotonic() - start
        # After a normal exit too: a daemon the run left behind must not outlive it.
        tree.kill(grace_s)
    except BaseException:
        tree.kill(grace_s)  # even on KeyboardInterrupt, nothing may be left running
        capture.close()
        raise
    cut = capture.close()
    killed = timed_out or interrupted or bool(why)
    notes = [f"{name}: {n} bytes not kept (stored logs are capped at {human(log_cap)} a stream)"
             for name, n in cut.items()]  # fmt: skip
    return RunOutcome(
        exit_code=None if killed else proc.returncode,
        timed_out=timed_out,
        interrupted=interrupted,
        wall_s=time.monotonic() - start if killed else wall_s,
        stdout_path=stdout_path,
        stderr_path=stderr_path,
        output_tail=output_tail(stdout_path, stderr_path),
        killed_because=why,
        notes=notes,
    )


def kill_marked(prefix: str, grace_s: float = 0.5) -> int:
    """Kill every process whose run marker starts with `prefix`; how many there were."""
    protected = _protected_pids()

    def collect() -> list[psutil.Process]:
        procs = []
        for pid in _marked_pids(prefix.encode(), exact=False):
            with contextlib.suppress(psutil.Error):
                if pid not in protected and _alive(proc := psutil.Process(pid)):
                    procs.append(proc)
        return procs

    return _terminate(collect, grace_s)
