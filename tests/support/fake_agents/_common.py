"""Shared by the fake coding agents: read the prompt, edit `X = n` in the surface, report.

The stand-ins of real CLIs (bin/) also record what the real tool would do beyond its model
calls: a connection it would open (analytics, update checks, model lists) goes to
`$HOME/.fake-agents-network.log`, and a session it would keep goes under `$HOME`.
"""

from __future__ import annotations

import json
import os
import re
import sys
import uuid
from pathlib import Path


def read_prompt(text: str | None = None) -> str:
    """The prompt (from stdin unless given); it must equal $OVERNIGHT_PROMPT_FILE's content."""
    data = sys.stdin.read() if text is None else text
    from_file = Path(os.environ["OVERNIGHT_PROMPT_FILE"]).read_text()
    if data != from_file:
        sys.exit("fake agent: the prompt differs from $OVERNIGHT_PROMPT_FILE")
    if "# Your task" not in data:
        sys.exit("fake agent: the prompt has no task section")
    return data


def surface() -> str:
    return (os.environ.get("OVERNIGHT_SURFACE") or "score.py").split()[0]


def lower_x(path: str | None = None) -> tuple[str, str]:
    """Lower the knob `X = n` of the surface by one; (old, new) as text."""
    file = Path(path or surface())
    text = file.read_text()
    m = re.search(r"^X = (\S+)$", text, re.M)
    assert m, "no X in the surface"
    old = m.group(1)
    new = f"{float(old) - 1:g}"
    file.write_text(text[: m.start(1)] + new + text[m.end(1) :])
    return old, new


def describe(text: str) -> None:
    Path(os.environ["OVERNIGHT_DESCRIPTION_FILE"]).write_text(text)


def report_env() -> None:
    """Variable names only (values may be secrets), and the key's value when asked to."""
    print("env-names: " + ",".join(sorted(os.environ)))
    echo = os.environ.get("FAKE_ECHO_KEY")
    if echo:
        print(f"key seen by the agent: {os.environ.get(echo, 'absent')}")


def network(tool: str, host: str, why: str) -> None:
    """A connection the real tool would open besides its model's API."""
    log = Path(os.environ.get("HOME", "/nonexistent")) / ".fake-agents-network.log"
    with log.open("a") as fh:
        fh.write(f"{tool}\t{host}\t{why}\n")


def within(path: Path, roots: list[Path]) -> bool:
    path = path.resolve()
    return any(path == r.resolve() or r.resolve() in path.parents for r in roots)


class Sessions:
    """Conversations a CLI keeps on disk: one JSON file per session id, with its prompts."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def _file(self, sid: str) -> Path:
        return self.folder / f"{sid}.json"

    def exists(self, sid: str) -> bool:
        return self._file(sid).is_file()

    def latest(self, cwd: str) -> str | None:
        files = self.folder.glob("*.json") if self.folder.is_dir() else []
        found = [(p.stat().st_mtime_ns, p.stem) for p in files
                 if json.loads(p.read_text())["cwd"] == cwd]  # fmt: skip
        return max(found)[1] if found else None

    def turns(self, sid: str) -> int:
        return len(json.loads(self._file(sid).read_text())["prompts"]) if self.exists(sid) else 0

    def add(self, sid: str | None, prompt: str) -> str:
        sid = sid or str(uuid.uuid4())
        self.folder.mkdir(parents=True, exist_ok=True)
        data = {"cwd": os.getcwd(), "prompts": []}
        if self.exists(sid):
            data = json.loads(self._file(sid).read_text())
        data["prompts"].append(prompt)
        self._file(sid).write_text(json.dumps(data))
        return sid
