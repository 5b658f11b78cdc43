"""End-to-end: `overnight init --agent claude|codex|generic` writes the skill/instructions and
a registration of `overnight mcp` that a client can start."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import anyio
import pytest
from conftest import SCORE_PY, git, make_repo, overnight_env, run_cli

pytest.importorskip("mcp")
from mcp import ClientSession, StdioServerParameters  # noqa: E402
from mcp.client.stdio import stdio_client  # noqa: E402


def test_init_agent_writes_the_skill_and_a_registration_that_starts(tmp_path: Path) -> None:
    rules = "# Our rules\n\nBe nice.\n"
    repo = make_repo(tmp_path / "repo", {"score.py": SCORE_PY, "AGENTS.md": rules})
    out = run_cli(repo, "init", "--surface", "score.py", "--metric", "score", "--budget", "30s",
                  "--name", "t", "--agent", "claude")  # fmt: skip
    assert out.returncode == 0, out.stderr
    skill = (repo / ".claude" / "skills" / "overnight" / "SKILL.md").read_text()
    assert skill.startswith("---\nname: overnight\ndescription: ")
    for needle in ("study()", "submit(", "show(", "stop()", "`score.py`", "wait=false"):
        assert needle in skill
    assert "claude mcp add --transport stdio --scope project overnight -- " in out.stdout
    entry = json.loads((repo / ".mcp.json").read_text())["mcpServers"]["overnight"]

    # With a study set up, --agent only adds the agent's files; sections are not duplicated.
    for _ in range(2):
        out = run_cli(repo, "init", "--agent", "codex")
        assert out.returncode == 0, out.stderr
    agents = (repo / "AGENTS.md").read_text()
    assert agents.startswith(rules) and agents.count("overnight:begin") == 1
    codex = tomllib.loads((repo / ".codex" / "config.toml").read_text())["mcp_servers"]
    assert codex["overnight"]["args"][-1] == "mcp" and codex["overnight"]["tool_timeout_sec"] >= 120
    assert "codex mcp add overnight -- " in out.stdout
    out = run_cli(repo, "init", "--agent", "generic")
    assert out.returncode == 0 and '"mcpServers"' in out.stdout
    assert run_cli(repo, "init", "--agent", "cursor").returncode == 2

    # The registered command is a working server.
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "study")

    async def scenario() -> list[str]:
        params = StdioServerParameters(command=entry["command"], args=entry["args"],
                                       cwd=str(repo), env=overnight_env())  # fmt: skip
        with open(tmp_path / "server.log", "w") as errlog:
            async with stdio_client(params, errlog=errlog) as (read, write):
                async with ClientSession(read, write) as s:
                    init = await s.initialize()
                    assert "submit" in (init.instructions or "")
                    return [t.name for t in (await s.list_tools()).tools]

    assert anyio.run(scenario) == ["study", "submit", "show", "stop"]
