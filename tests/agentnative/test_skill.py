"""The instructions and registrations `overnight init --agent` writes."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import pytest

from overnight.agentnative.skill import (
    StudyFacts,
    codex_table,
    skill_file,
    skill_text,
    tool_timeout,
    write_agent_files,
)
from overnight.errors import UsageError

FACTS = StudyFacts("night", ["a.py", "b.py"], "val_bpb", "minimize", 300)


def test_the_generated_instructions_name_the_study(tmp_path: Path) -> None:
    text = skill_text(StudyFacts("night", ["a.py", "b.py"], "val_bpb", "minimize", 300))
    assert "`a.py`, `b.py`" in text and "`val_bpb` (lower is better)" in text
    assert "overnight/night" in text and "300 s per run" in text


def test_the_skill_file_has_frontmatter_claude_reads() -> None:
    text = skill_file(FACTS)
    head, _, body = text.partition("\n---\n")
    assert head.startswith("---\nname: overnight\ndescription: ")
    assert "val_bpb" in json.loads(head.split("description: ", 1)[1])
    assert body.lstrip().startswith("# Driving the overnight study `night`")


def test_the_codex_table_parses_and_waits_long_enough_for_a_run() -> None:
    table = tomllib.loads(codex_table(["overnight", "mcp"], tool_timeout(300)))
    entry = table["mcp_servers"]["overnight"]
    assert entry == {"command": "overnight", "args": ["mcp"], "tool_timeout_sec": 1260}
    assert tool_timeout(5) == 300  # never below the default of a slow start


def test_existing_registrations_are_kept_and_bad_files_named(tmp_path: Path) -> None:
    mine = {"mcpServers": {"overnight": {"command": "my-wrapper", "args": []}, "other": {}}}
    (tmp_path / ".mcp.json").write_text(json.dumps(mine))
    out = write_agent_files(tmp_path, "claude", FACTS)
    assert any("kept the `overnight` server" in line for line in out)
    assert json.loads((tmp_path / ".mcp.json").read_text()) == mine
    write_agent_files(tmp_path, "claude", FACTS, force=True)
    servers = json.loads((tmp_path / ".mcp.json").read_text())["mcpServers"]
    assert servers["other"] == {} and servers["overnight"]["args"][-1] == "mcp"
    (tmp_path / ".codex").mkdir()
    (tmp_path / ".codex" / "config.toml").write_text("model = [\n")
    with pytest.raises(UsageError, match="config.toml: not valid TOML"):
        write_agent_files(tmp_path, "codex", FACTS)
