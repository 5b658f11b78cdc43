"""`overnight report` and `overnight serve`: the study as a page."""

from pathlib import Path
from typing import Annotated

import typer

from overnight.cli.common import ConfigOpt, open_study
from overnight.errors import UsageError


def report(
    config: ConfigOpt = None,
    out: Annotated[
        Path | None,
        typer.Option("--out", help="Output folder (default .overnight/<name>/report)."),
    ] = None,
) -> None:
    """Write report.html (self-contained, shareable) and progress.png."""
    from overnight.report import write_report

    files = write_report(open_study(config), out)
    typer.echo(f"wrote {files.html} and {files.png} ({files.experiments} experiments)")


def serve(
    config: ConfigOpt = None,
    host: Annotated[str, typer.Option(help="Address to bind; non-loopback needs a token.")] = (
        "127.0.0.1"
    ),
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8765,
    token: Annotated[
        str | None,
        typer.Option(
            envvar="OVERNIGHT_SERVE_TOKEN",
            help="Token every request must carry (generated when binding beyond loopback).",
        ),
    ] = None,
) -> None:
    """A live, read-only dashboard of the study in your browser."""
    from overnight.report.server import serve as serve_dashboard

    if not 0 < port < 65536:
        raise UsageError(f"--port: expected 1-65535, got {port}")
    study = open_study(config)
    check_port(host, port)
    serve_dashboard(study, host=host, port=port, token=token)


def check_port(host: str, port: int) -> None:
    """Refuse, before printing a URL, an address the dashboard could not listen on."""
    import errno
    import socket

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
        try:
            sock.bind((host, port))
        except OSError as exc:
            busy = "already in use" if exc.errno == errno.EADDRINUSE else (exc.strerror or str(exc))
            raise UsageError(f"--port {port}: cannot listen on {host}:{port} ({busy}); choose "
                             "another --port, or stop what listens there") from None  # fmt: skip


