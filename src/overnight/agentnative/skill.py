"""What `overnight init --agent claude|codex|generic` writes: the instructions a coding agent
follows to drive a study through the `overnight mcp` tools, and the registration of that
server with the agent's client.

  claude   .claude/skills/overnight/SKILL.md  +  .mcp.json (project scope, as written by
           `claude mcp add --scope project overnight -- overnight mcp`)
  codex    an `overnight` section of AGENTS.md  +  .codex/config.toml [mcp_servers.overnight]
  generic  an `overnight` section of AGENTS.md  (+ the usual `mcpServers` JSON, printed)

Existing files are extended, never clobbered: a section of ours is replaced between its
markers, a registration that is already there is left alone unless `force`.
"""

from __future__ import annotations

import json
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

from overnight.errors import UsageError

AGENTS = ("claude", "codex", "generic")
BEGIN, END = "<!-- overnight:begin -->", "<!-- overnight:end -->"

# What every client puts in front of the model with the tools (MCP `instructions`).
SERVER_INSTRUCTIONS = """\
overnight runs an optimization study on this repository: one surface file, one metric, a fixed
time budget per run. You propose; overnight measures, judges and records.
Loop: study() -> change the best surface (study().best.surface) -> submit(files={path: full new
content}, description, hypothesis) -> read status and reason -> repeat from the current best.
Only surface files may change: anything else is rejected unrun. Statuses: keep (new best),
discard (not better), crash, timeout, invalid (no runnable change), rejected (broke a rule).
With a budget longer than your client's tool timeout, submit with wait=false and poll
show(experiment). Call stop() when you are done."""


@dataclass
class StudyFacts:
    """What the generated text names: the study's triplet."""

    name: str
    surface: list[str]
    metric: str
    goal: str
    budget_s: float


def skill_text(f: StudyFacts, heading: str = "#") -> str:
    """The instructions, for a SKILL.md body or an AGENTS.md section."""
    surface = ", ".join(f"`{s}`" for s in f.surface)
    better = "lower" if f.goal == "minimize" else "higher"
    h = heading
    return f"""\
{h} Driving the overnight study `{f.name}`

This repository has an overnight study (`overnight.toml`): the surface {surface}, the metric
`{f.metric}` ({better} is better), {f.budget_s:g} s per run. Through the `overnight` MCP tools you
propose changes of the surface; overnight runs each one under the budget, judges it against
the best with its noise-aware rule (and a hidden holdout, if the study has one), and keeps it
as a commit on branch `overnight/{f.name}` or records why not. You cannot change these rules.

{h}# The loop
1. `study()`: read the instructions, the best (`best.value`, `best.surface`), the recent
   history with each verdict's `reason`, the traces digest and the last crash log.
2. Make ONE focused change, starting from `best.surface` (your working tree stays at the
   commit the study started from; the best lives on the branch).
3. `submit(files={{"<surface path>": "<complete new content>"}}, description="one line",
   hypothesis="why it should help")` returns `experiment`, `status`, `value`, `reason`.
4. `keep`: it is the new best, build on it. `discard`, `crash`, `timeout`, `invalid`,
   `rejected`: read `reason` (and `show(experiment)` for the diff and measurements), then
   start again from the best. When a result carries a `note`, the best moved: call `study()`.

{h}# Rules
- Change only the surface ({surface}). A submission that touches any other file is
  `rejected` and never runs. Never edit `overnight.toml`, the instructions file, locked
  files, `.overnight/` or the `overnight/{f.name}` branch by hand: overnight checks every run
  and keeps its own record (`overnight verify` replays every verdict).
- Submit complete file contents, not diffs. Identical content is `invalid` (a duplicate).
- One idea per submission, so that each verdict says which idea worked.
- `submit` waits for the verdict. If your client gives up on tool calls sooner than a run
  takes, use `submit(..., wait=false)`, which returns the experiment number at once, and
  poll `show(experiment)` until its `status` is set. If a call timed out anyway, the
  experiment still runs: find it under `running` in `study()`.
- Sub-agents may submit in parallel, up to the study's slots (`study().session.slots`);
  more are refused until a verdict frees a slot.

{h}# When to stop
Stop when the user's goal is reached, when `study().left` says nothing is left, when the
session reports it is over, or after a long run of non-keeps with no new idea. Then call
`stop()` (experiments in flight are decided first) and tell the user: `overnight status`,
`overnight log` and `overnight finish` review the night; `overnight apply N` brings one
experiment's change into their checkout.
"""


def skill_file(f: StudyFacts) -> str:
    """`.claude/skills/overnight/SKILL.md`: frontmatter, then the instructions."""
    description = (
        f"Optimize `{f.metric}` in this repository by running the overnight study "
        f"`{f.name}` through the `overnight` MCP tools (study, submit, show, stop): propose "
        f"changes of {', '.join(f.surface)} and get each measured and kept or reverted. Use "
        "when asked to run experiments, optimize the metric, or run overnight."
    )
    return f"---\nname: overnight\ndescription: {json.dumps(description)}\n---\n\n{skill_text(f)}"


def server_command(config: Path | None) -> list[str]:
    """How a client starts the server: `overnight mcp`, by the executable on PATH when
    there is one, else through this Python."""
    args = ["mcp"] + (["--config", str(config)] if config is not None else [])
    if shutil.which("overnight"):
        return ["overnight", *args]
    return [sys.executable, "-m", "overnight", *args]


def registration(agent: str, command: list[str], budget_s: float) -> str:
    """The registration commands and snippets to print for `agent`."""
    line = " ".join(_shell(a) for a in command)
    timeout = tool_timeout(budget_s)
    codex_toml = codex_table(command, timeout)
    if agent == "claude":
        return (f"register the server (project scope, writes .mcp.json):\n"
                f"  claude mcp add --transport stdio --scope project overnight -- {line}\n"
                "in Claude Code, `/mcp` lists it; the skill is `/overnight`")  # fmt: skip
    if agent == "codex":
        return (f"register the server for every project (writes ~/.codex/config.toml):\n"
                f"  codex mcp add overnight -- {line}\n"
                f"then raise its tool timeout there (a submit waits for a run):\n{codex_toml}"
                "in Codex, `/mcp` lists it")  # fmt: skip
    entry = {"command": command[0], "args": command[1:]}
    snippet = json.dumps({"mcpServers": {"overnight": entry}}, indent=2)
    return f"register the server with your client (the usual JSON shape):\n{snippet}"


def tool_timeout(budget_s: float) -> int:
    """A client tool timeout that lets `submit` wait for a run with some room (repeats and
    a confirming re-run may take several budgets)."""
    return int(max(300, 4 * budget_s + 60))


def codex_table(command: list[str], timeout: int) -> str:
    args = ", ".join(json.dumps(a) for a in command[1:])
    return (f"[mcp_servers.overnight]\ncommand = {json.dumps(command[0])}\nargs = [{args}]\n"
            f"tool_timeout_sec = {timeout}\n")  # fmt: skip


def write_agent_files(root: Path, agent: str, f: StudyFacts, force: bool = False) -> list[str]:
    """Write `agent`'s instructions and registration under `root`; returns what to print."""
    command = server_command(None)
    done: list[str] = []
    if agent == "claude":
        done.append(_write(root / ".claude" / "skills" / "overnight" / "SKILL.md",
                           skill_file(f), force))  # fmt: skip
        done.append(_merge_mcp_json(root / ".mcp.json", command, force))
    else:
        done.append(_section(root / "AGENTS.md", skill_text(f, "##")))
    if agent == "codex":
        done.append(_codex_config(root / ".codex" / "config.toml", command,
                                  tool_timeout(f.budget_s), force))  # fmt: skip
    done.append(registration(agent, command, f.budget_s))
    return done


# == writers ==================================================================================


def _write(path: Path, text: str, force: bool) -> str:
    if path.exists() and path.read_text() != text and not force:
        return f"kept {path} (it differs from what overnight writes; --force to overwrite)"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return f"wrote {path}"


def _section(path: Path, body: str) -> str:
    """Our section of a shared instructions file, replaced between markers, else appended."""
    block = f"{BEGIN}\n{body.rstrip()}\n{END}\n"
    old = path.read_text() if path.exists() else ""
    if BEGIN in old and END in old:
        head, _, rest = old.partition(BEGIN)
        _, _, tail = rest.partition(END)
        new = head + block.rstrip("\n") + tail
        verb = "updated the overnight section of"
    else:
        new = old + ("\n" if old and not old.endswith("\n") else "") + ("\n" if old else "") + block
        verb = "added an overnight section to" if old else "wrote"
    path.write_text(new)
    return f"{verb} {path}"


def _merge_mcp_json(path: Path, command: list[str], force: bool) -> str:
    data: dict = {}
    if path.exists():
        try:
            data = json.loads(path.read_text() or "{}")
        except json.JSONDecodeError as exc:
            raise UsageError(f"{path}: not valid JSON ({exc}); fix it or remove it") from None
        if not isinstance(data, dict):
            raise UsageError(f"{path}: expected a JSON object")
    servers = data.setdefault("mcpServers", {})
    entry = {"type": "stdio", "command": command[0], "args": command[1:], "env": {}}
    if "overnight" in servers and servers["overnight"] != entry and not force:
        return f"kept the `overnight` server already in {path} (--force to replace it)"
    servers["overnight"] = entry
    path.write_text(json.dumps(data, indent=2) + "\n")
    return f"registered the `overnight` MCP server in {path}"


def _codex_config(path: Path, command: list[str], timeout: int, force: bool) -> str:
    import tomllib

    old = path.read_text() if path.exists() else ""
    try:
        present = "overnight" in tomllib.loads(old).get("mcp_servers", {})
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"{path}: not valid TOML ({exc}); fix it or remove it") from None
    if present:
        return (f"kept [mcp_servers.overnight] already in {path}"
                + (" (edit it by hand: overnight does not rewrite TOML)" if force else ""))
    path.parent.mkdir(parents=True, exist_ok=True)
    sep = "\n" if old and not old.endswith("\n") else ""
    path.write_text(old + sep + ("\n" if old else "") + codex_table(command, timeout))
    return (f"registered the `overnight` MCP server in {path} (Codex reads a project's "
            ".codex/config.toml once you trust the project)")  # fmt: skip


def _shell(arg: str) -> str:
    import shlex

    return shlex.quote(arg)
