"""Shared by the fake coding agents: read the prompt, edit `X = n` in score.py, report."""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path


def read_prompt() -> str:
    """The prompt from stdin; it must equal $OVERNIGHT_PROMPT_FILE's content."""
    data = sys.stdin.read()
    from_file = Path(os.environ["OVERNIGHT_PROMPT_FILE"]).read_text()
    if data != from_file:
        sys.exit("fake agent: stdin and $OVERNIGHT_PROMPT_FILE differ")
    if "# Your task" not in data:
        sys.exit("fake agent: the prompt has no task section")
    return data


def lower_x(path: str = "score.py") -> tuple[str, str]:
    """Lower the knob `X = n` of the surface by one; (old, new) as text."""
    file = Path(path)
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
