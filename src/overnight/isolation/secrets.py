"""The controller's secrets, held in memory only once it has started.

A run can read the environment of any process it may inspect: without the sandbox, the
controller's own `/proc/<pid>/environ`, and whatever environment the controller passes to
the git commands, hooks and helpers it starts. So at start-up `seal()` moves every
secret-looking variable (a name containing KEY, SECRET, TOKEN, PASSWORD or CREDENTIAL, plus
the proposer's API key variable whatever its name) out of `os.environ` into this module,
overwrites their bytes in the environment block the kernel shows as `/proc/<pid>/environ`,
and marks the process non-dumpable, so that other processes of the same user cannot read
its memory or its `/proc` files at all (root can, with CAP_SYS_PTRACE).

Code that needs a secret asks for it by name: `get(name)`, and `environ()` is the full
environment for what must pass secrets on on purpose (a run's `pass_env`, an agent CLI).
Plug-in proposers read their keys with `overnight.isolation.secrets.get`.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import sys
from collections.abc import Iterable

SECRET_WORDS = ("KEY", "SECRET", "TOKEN", "PASSWORD", "CREDENTIAL")
_SEALED: dict[str, str] = {}
_PR_SET_DUMPABLE = 4


def looks_secret(name: str) -> bool:
    return any(word in name.upper() for word in SECRET_WORDS)


def get(name: str, default: str = "") -> str:
    """The value of variable `name`, sealed or not."""
    return os.environ.get(name) or _SEALED.get(name) or default


def environ() -> dict[str, str]:
    """The environment the controller started with, sealed secrets included."""
    return {**os.environ, **_SEALED}


def sealed() -> list[str]:
    return sorted(_SEALED)


def seal(extra: Iterable[str] = ()) -> list[str]:
    """Move secret-looking variables (and `extra`) out of the process environment; returns
    the names sealed. Idempotent: a later call seals what appeared since."""
    names = [n for n in os.environ if looks_secret(n)]
    names += [n for n in extra if n and n in os.environ]
    for name in dict.fromkeys(names):
        _SEALED[name] = os.environ.pop(name)  # unsetenv: children never inherit it
    if sys.platform.startswith("linux"):
        _scrub_initial_environment(set(_SEALED))
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_DUMPABLE, 0, 0, 0, 0)
    return sorted(set(names))


def _scrub_initial_environment(names: set[str]) -> None:
    """Zero `NAME=value` of `names` in the environment block the process was started with
    (what `/proc/<pid>/environ` shows; unsetenv only drops the pointer to it)."""
    try:
        with open("/proc/self/stat", "rb") as fh:
            data = fh.read()
        fields = data[data.rfind(b")") + 2 :].split()
        start, end = int(fields[47]), int(fields[48])  # env_start, env_end (proc(5))
    except (OSError, ValueError, IndexError):
        return
    if not 0 < start < end or end - start > 1 << 24:
        return
    block = (ctypes.c_char * (end - start)).from_address(start)
    raw = bytes(block)
    offset = 0
    for entry in raw.split(b"\0"):
        name = entry.partition(b"=")[0].decode(errors="replace")
        if entry and name in names:
            ctypes.memset(start + offset, 0, len(entry))
        offset += len(entry) + 1


def reset_for_tests() -> None:
    """Put sealed variables back (tests that seal in-process)."""
    os.environ.update(_SEALED)
    _SEALED.clear()
