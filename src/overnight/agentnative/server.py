"""The MCP binding of an `AgentSession`: four tools over stdio, with the official `mcp` SDK
(the `mcp` extra; imported only here, only by `overnight mcp`).

The tool names, arguments and JSON results are public interface, like the CLI's:
`study()`, `submit(files, description, hypothesis="", wait=true)`, `show(experiment)`,
`stop()`. Arguments are checked against strict models: an unknown or mistyped argument is
refused with one line, and nothing runs.
"""

from __future__ import annotations

import json
import threading
import time
from typing import TYPE_CHECKING, Any

import anyio
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from overnight.agentnative.skill import SERVER_INSTRUCTIONS
from overnight.errors import OvernightError, UsageError

if TYPE_CHECKING:
    from overnight.agentnative.session import AgentSession

PROGRESS_EVERY_S = 2.0  # how often a waiting tool call reports progress


class _Args(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class StudyArgs(_Args):
    pass


class SubmitArgs(_Args):
    files: dict[str, str] = Field(
        description="Surface path (relative to the repository root) -> its complete new "
        "content. Start from the best surface that study() returns."
    )
    description: str = Field(min_length=1, description="One line: what the change does.")
    hypothesis: str = Field("", description="Why it should improve the metric.")
    wait: bool = Field(True, description="Wait for the verdict (false: return the "
                       "experiment number at once; poll it with show).")  # fmt: skip


class ShowArgs(_Args):
    experiment: int = Field(ge=0, description="The experiment number.")


class StopArgs(_Args):
    pass


TOOLS: dict[str, tuple[type[_Args], str, bool]] = {
    "study": (StudyArgs, "The study as JSON: triplet (surface, metric, budget), instructions, "
              "best experiment, value and surface, recent history with statuses and reasons, "
              "traces digest, last crash log, running experiments, what is left.", True),
    "submit": (SubmitArgs, "Submit a candidate: the complete new content of surface files. "
               "overnight runs it under the study's budget, judges it against the best with "
               "its noise-aware rule and holdout, and returns {experiment, status, value, "
               "reason} (status: keep, discard, crash, timeout, invalid or rejected).", False),
    "show": (ShowArgs, "One experiment as `overnight show N --json` prints it (diff, metrics, "
             "verdict and reason, measurements); its state while it is undecided.", True),
    "stop": (StopArgs, "End the session: no more submissions; experiments in flight are "
             "decided first. Returns the study's status.", False),
}


def refusal(name: str, exc: ValidationError) -> str:
    """One line for the agent: which argument is wrong and why."""
    parts = []
    for err in exc.errors():
        where = ".".join(str(x) for x in err["loc"]) or "arguments"
        if err["type"] == "extra_forbidden":
            parts.append(f"unknown argument {where!r}")
        elif err["type"] == "missing":
            parts.append(f"missing argument {where!r}")
        else:
            parts.append(f"{where}: {err['msg']}")
    known = ", ".join(TOOLS[name][0].model_fields) or "none"
    return f"{name}: " + "; ".join(parts) + f" (arguments: {known})"


class Tools:
    """The tools' calls, each returning a JSON-able result or raising `UsageError`."""

    def __init__(self, session: AgentSession) -> None:
        self.session = session

    async def call(self, name: str, args: _Args, progress: Any) -> dict[str, Any]:
        s = self.session
        if isinstance(args, StudyArgs):
            return await anyio.to_thread.run_sync(s.study_view)
        if isinstance(args, ShowArgs):
            return await anyio.to_thread.run_sync(s.show, args.experiment)
        if isinstance(args, SubmitArgs):
            sub = await anyio.to_thread.run_sync(s.submit, args.files, args.description,
                                                 args.hypothesis)  # fmt: skip
            await self._wait(lambda t: s.desk.wait(sub, True, t), lambda: s.progress(sub),
                             progress)  # fmt: skip
            if not args.wait:
                return s.result(sub, numbered_only=True)
            await self._wait(lambda t: s.desk.wait(sub, False, t), lambda: s.progress(sub),
                             progress)  # fmt: skip
            return s.result(sub)
        if isinstance(args, StopArgs):
            s.stop()
            await self._wait(s.finished.wait, lambda: "finishing the experiments in flight",
                             progress)  # fmt: skip
            status = await anyio.to_thread.run_sync(s.status)
            return {"stopped": True, "reason": s.ended_because(), "status": status}
        raise UsageError(f"unknown tool {name!r}")

    @staticmethod
    async def _wait(wait: Any, what: Any, progress: Any) -> None:
        """Wait, in a worker thread, for what the loop's threads signal (`wait(timeout)` is
        True once it happened), reporting progress at once and every PROGRESS_EVERY_S."""
        start = time.monotonic()
        while True:
            await progress(time.monotonic() - start, what())
            if await anyio.to_thread.run_sync(wait, PROGRESS_EVERY_S):
                return


def build_server(session: AgentSession) -> Any:
    """The low-level MCP server with the four tools."""
    import mcp.types as types
    from mcp.server.lowlevel import Server

    tools = Tools(session)
    listing = [
        types.Tool(
            name=name, description=desc, input_schema=model.model_json_schema(),
            annotations=types.ToolAnnotations(read_only_hint=ro, destructive_hint=False,
                                              idempotent_hint=ro, open_world_hint=False),
        )  # fmt: skip
        for name, (model, desc, ro) in TOOLS.items()
    ]

    async def list_tools(ctx: Any, params: Any) -> Any:
        return types.ListToolsResult(tools=listing)

    def reply(data: Any, error: bool = False) -> Any:
        text = data if isinstance(data, str) else json.dumps(data, indent=1, default=str,
                                                             ensure_ascii=False)
        structured = data if isinstance(data, dict) and not error else None
        return types.CallToolResult(content=[types.TextContent(type="text", text=text)],
                                    structured_content=structured, is_error=error)  # fmt: skip

    async def call_tool(ctx: Any, params: Any) -> Any:
        name = params.name
        if name not in TOOLS:
            return reply(f"unknown tool {name!r} (tools: {', '.join(TOOLS)})", error=True)
        try:
            args = TOOLS[name][0].model_validate(params.arguments or {})
        except ValidationError as exc:
            return reply(refusal(name, exc), error=True)

        async def progress(done: float, message: str) -> None:
            await ctx.session.report_progress(round(done, 1), None, message)

        try:
            return reply(await tools.call(name, args, progress))
        except OvernightError as exc:
            return reply(f"{name}: {exc}", error=True)

    from overnight import __version__

    return Server("overnight", version=__version__, instructions=SERVER_INSTRUCTIONS,
                  on_list_tools=list_tools, on_call_tool=call_tool)  # fmt: skip


def serve_stdio(session: AgentSession) -> threading.Thread:
    """Serve the session over stdin/stdout in a thread of its own (the loop keeps the main
    thread, as in `overnight run`); when the client goes away the session is stopped."""
    server = build_server(session)

    async def main() -> None:
        from mcp.server.stdio import stdio_server

        async with stdio_server() as (read, write):
            await server.run(read, write, server.create_initialization_options())

    def target() -> None:
        try:
            anyio.run(main)
        finally:
            session.client_gone()

    thread = threading.Thread(target=target, name="overnight-mcp-server", daemon=True)
    thread.start()
    return thread
