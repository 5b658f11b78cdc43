"""The per-run reaper: a small process at the root of every command's process tree.

A daemon that forks twice, calls `setsid()` and clears its environment leaves the run's
process tree, its process group and its marker behind; on a plain system it is adopted by
init and outlives the run. Under the reaper it cannot: the reaper declares itself a *child
subreaper* (Linux `PR_SET_CHILD_SUBREAPER`), so every orphan of the run is re-parented to
it instead of to init and stays a descendant the controller sees. Once the command exits,
the reaper terminates whatever is left (SIGTERM, a grace period, SIGKILL) before it exits
with the command's own status, and if the controller dies it kills the whole tree at once.
Killed itself with SIGKILL (which no process can handle), it takes the command with it
(the command's parent-death signal), and the controller's other nets find the rest.
It also raises the run's OOM score, so that when memory runs out the kernel kills the run
rather than the controller that records it.

Elsewhere than Linux the reaper only runs the command (the controller's other nets remain).
"""

from __future__ import annotations

import sys

# Runs as `python -I -S -c REAPER <controller pid> <grace s> -- argv…`; stdlib only.
REAPER = r"""
import ctypes, os, signal, sys, time
ppid, grace = int(sys.argv[1]), float(sys.argv[2])
argv = sys.argv[4:]
libc = None
try:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER
    libc.prctl(1, signal.SIGHUP, 0, 0, 0)  # PR_SET_PDEATHSIG: told when the controller dies
except (OSError, AttributeError):
    pass
try:
    with open("/proc/self/oom_score_adj", "w") as fh:
        fh.write("1000")
except OSError:
    pass


def kids():
    out = []
    try:
        tids = os.listdir("/proc/self/task")
    except OSError:
        return out
    for tid in tids:
        try:
            with open(f"/proc/self/task/{tid}/children") as fh:
                out += [int(k) for k in fh.read().split()]
        except OSError:
            pass
    return out


def tree():
    todo, seen = kids(), []
    while todo:
        pid = todo.pop()
        if pid in seen:
            continue
        seen.append(pid)
        try:
            with open(f"/proc/{pid}/task/{pid}/children") as fh:
                todo += [int(k) for k in fh.read().split()]
        except OSError:
            pass
    return seen


def reap():
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def kill_all(sig):
    for pid in tree():
        try:
            os.kill(pid, sig)
        except OSError:
            pass


def on_parent_death(*_):
    for _ in range(50):
        kill_all(signal.SIGKILL)
        reap()
        if not tree():
            break
        time.sleep(0.01)
    os._exit(137)


def on_term(sig, _frame):
    kill_all(sig)  # the command decides how to end; the controller follows with SIGKILL


signal.signal(signal.SIGHUP, on_parent_death)
signal.signal(signal.SIGTERM, on_term)
signal.signal(signal.SIGINT, on_term)
if os.getppid() != ppid:
    on_parent_death()
me = os.getpid()
child = os.fork()
if child == 0:
    for s in (signal.SIGHUP, signal.SIGTERM, signal.SIGINT):
        signal.signal(s, signal.SIG_DFL)
    # Killed outright (SIGKILL: the OOM killer, a Ray node ending a dead driver's worker and
    # its children), the reaper cannot act: the command then dies with it.
    if libc is not None:
        libc.prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG
    if os.getppid() != me:
        os._exit(137)
    try:
        os.execvp(argv[0], argv)
    except OSError as exc:
        os.write(2, f"overnight: cannot run {argv[0]}: {exc}\n".encode())
        os._exit(127)
status = 0
while True:
    try:
        pid, st = os.wait()
    except ChildProcessError:
        break
    except InterruptedError:
        continue
    if pid == child:
        status = st
        break
# The command is done: nothing it started may outlive it.
if tree():
    kill_all(signal.SIGTERM)
    deadline = time.monotonic() + grace
    while tree() and time.monotonic() < deadline:
        reap()
        time.sleep(0.005)
    deadline = time.monotonic() + 5.0  # a process stuck in the kernel cannot be killed
    while tree() and time.monotonic() < deadline:
        kill_all(signal.SIGKILL)
        reap()
        time.sleep(0.005)
reap()
if os.WIFSIGNALED(status):
    sig = os.WTERMSIG(status)
    try:
        signal.signal(sig, signal.SIG_DFL)
    except (OSError, ValueError):  # SIGKILL, SIGSTOP: no handler to reset
        pass
    os.kill(os.getpid(), sig)
os._exit(os.waitstatus_to_exitcode(status) if os.WIFEXITED(status) else 1)
"""


def reaper_prefix(controller_pid: int, grace_s: float) -> list[str]:
    """The argv that runs what follows it under a reaper (nothing outside Linux)."""
    if not sys.platform.startswith("linux"):
        return []
    return [sys.executable, "-I", "-S", "-c", REAPER, str(controller_pid), f"{grace_s:g}", "--"]
