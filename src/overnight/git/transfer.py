"""Carrying a change from the code it was made on to other code: the one mechanism behind
re-basing a stale proposal, `overnight apply`, `finish --drop` and `finish --ablate`."""

from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path


def three_way(base: bytes, ours: bytes, theirs: bytes) -> bytes | None:
    """The change base → theirs merged into ours (`git merge-file`); None on a conflict or
    content it cannot merge."""
    with tempfile.TemporaryDirectory(prefix="overnight-merge-") as tmp:
        paths = []
        for name, data in (("ours", ours), ("base", base), ("theirs", theirs)):
            p = Path(tmp) / name
            p.write_bytes(data)
            paths.append(str(p))
        proc = subprocess.run(["git", "merge-file", "-p", "--quiet", *paths], capture_output=True)
    return proc.stdout if proc.returncode == 0 else None


def three_way_text(base: str, ours: str, theirs: str) -> str | None:
    out = three_way(base.encode(), ours.encode(), theirs.encode())
    return None if out is None else out.decode(errors="replace")
