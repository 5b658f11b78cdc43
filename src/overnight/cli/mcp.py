"""`overnight mcp`: serve a study to a coding agent over the Model Context Protocol (stdio)."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from overnight.cli.common import ConfigOpt, open_study
from overnight.errors import UsageError


def mcp(
    config: ConfigOpt = None,
    experiments: Annotated[
        int | None, typer.Option("--experiments", "-n", help="Experiments to accept now.")
    ] = None,
    hours: Annotated[float | None, typer.Option(help="Stop after this many hours.")] = None,
    patience: Annotated[int | None, typer.Option(help="Stop after N non-keeps in a row.")] = None,
    workers: Annotated[
        int | None, typer.Option(help="Parallel experiment slots (concurrent submissions).")
    ] = None,
    executor: Annotated[str | None, typer.Option(help="local | ray")] = None,
    seed: Annotated[int, typer.Option(help="Seed of the runs.")] = 0,
) -> None:
    """Let a coding agent drive the study over MCP (stdio): study, submit, show, stop."""
    from overnight.cli.view import PlainView
    from overnight.experiment.loop import RunOptions

    for flag, value in (("--experiments", experiments), ("--patience", patience)):
        if value is not None and value < 0:
            raise UsageError(f"{flag}: expected a number >= 0, got {value}")
    if hours is not None and hours <= 0:
        raise UsageError(f"--hours: expected a positive number, got {hours}")
    try:
        import mcp.server.lowlevel  # noqa: F401 - the optional SDK, checked before anything runs
    except ImportError:
        raise UsageError(
            "`overnight mcp` needs the MCP SDK: pip install 'overnight[mcp]'"
        ) from None
    from overnight.agentnative.server import serve_stdio
    from overnight.agentnative.session import AgentSession

    study = open_study(config)
    opts = RunOptions(experiments=experiments, hours=hours, patience=patience, seed=seed,
                      workers=workers, executor=executor)  # fmt: skip
    # stdout carries the protocol: everything for people goes to stderr.
    session = AgentSession(study, opts, PlainView(sys.stderr))
    server = serve_stdio(session)
    session.run()
    if getattr(session.loop, "stop_signal", None) is None:
        # Stopped by stop() or a limit: study and show keep answering until the client goes.
        # Stopped by SIGINT/SIGTERM (as `overnight run` is): the process ends now.
        server.join()
    if session.error is not None:
        raise session.error
