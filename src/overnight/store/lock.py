"""One `overnight run` per study: an exclusive, non-blocking flock that the kernel releases
even when the controller is killed with -9."""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from overnight.errors import UsageError


@contextmanager
def study_lock(state_dir: Path, study: str) -> Iterator[None]:
    state_dir.mkdir(parents=True, exist_ok=True)
    fh = open(state_dir / "run.lock", "a+")  # noqa: SIM115 - held for the whole run
    try:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            pid = fh.read().strip() or "?"
            raise UsageError(
                f"another `overnight run` or `overnight mcp` (pid {pid}) is already running "
                f"study {study!r}; only one per study at a time"
            ) from None
        fh.seek(0)
        fh.truncate()
        fh.write(str(os.getpid()))
        fh.flush()
        yield
    finally:
        fh.close()
