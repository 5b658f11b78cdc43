"""The `overnight` command. Thin: parse, call the library, render.

Each command group lives in its own module; importing them registers them on `app`.
`main()` is the one place that turns every way a command can end into an exit code
(README, "Exit codes"); no user mistake ends in a traceback.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

import typer

from overnight.cli import check_model, inspect, mcp, review, run, serve
from overnight.cli.common import app
from overnight.errors import OvernightError

# The command table, in the order `overnight --help` lists it.
app.command()(run.init)
app.command()(run.run)
app.command()(inspect.status)
app.command()(inspect.log)
app.command()(inspect.show)
app.command()(serve.report)
app.command()(serve.serve)
app.command()(review.verify)
app.command()(review.finish)
app.command("apply")(review.apply_change)
app.command()(review.accept)
app.command()(mcp.mcp)
app.command("check-model")(check_model.check_model)


def _click_exception() -> type[Exception]:
    """The base class of the usage errors the installed typer raises: click's own, or the
    copy of click that newer typer releases bundle (`typer._click`)."""
    return next(c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException")


def usage_line(exc: Exception) -> str:
    """One line naming the mistake, a suggestion when there is one, and where help is."""
    ctx = getattr(exc, "ctx", None)
    where = ctx.command_path if ctx is not None else "overnight"
    possibilities = getattr(exc, "possibilities", None)
    if possibilities and getattr(exc, "option_name", None):
        text = f"{exc.message.rstrip('.')}; did you mean {' or '.join(sorted(possibilities))}?"
    else:
        text = exc.format_message()  # type: ignore[attr-defined]
    text = " ".join(text.split())
    return f"{where}: error: {text} (see `{where} --help`)"


def main(argv: Sequence[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args:
        args = ["--help"]  # bare `overnight`: the help, like `overnight --help`
    from overnight.isolation import secrets

    # From here on the process environment holds no secret: they live in memory only, out
    # of /proc/<pid>/environ and out of every git command or hook the controller starts.
    secrets.seal()
    try:
        code = app(args=args, prog_name="overnight", standalone_mode=False)
    except OvernightError as exc:
        typer.echo(f"overnight: error: {exc}", err=True)
        code = exc.exit_code
    except KeyboardInterrupt:
        typer.echo("overnight: interrupted", err=True)
        code = 130
    except BrokenPipeError:  # `overnight log | head`: the reader left; say nothing more
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        code = 1
    except typer.Abort:  # a prompt was cancelled
        typer.echo("overnight: aborted", err=True)
        code = 1
    except Exception as exc:
        if not isinstance(exc, _click_exception()):
            raise
        typer.echo(usage_line(exc), err=True)
        code = 2  # every usage mistake, whatever code the parser would have used
    raise SystemExit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
