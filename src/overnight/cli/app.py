"""The `overnight` command. Thin: parse, call the library, render.

Each command group lives in its own module; importing them registers them on `app`."""

from __future__ import annotations

import typer

from overnight.cli import check_model, inspect, review, run, serve
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
app.command("check-model")(check_model.check_model)


def main() -> None:
    try:
        app(standalone_mode=False)
    except OvernightError as exc:
        typer.echo(f"overnight: error: {exc}", err=True)
        raise SystemExit(exc.exit_code) from None
    except typer.Abort:
        typer.echo("aborted", err=True)
        raise SystemExit(1) from None
    except KeyboardInterrupt:
        typer.echo("overnight: interrupted", err=True)
        raise SystemExit(130) from None
    except Exception as exc:  # click usage errors
        import click

        if isinstance(exc, click.exceptions.ClickException):
            exc.show()
            raise SystemExit(2) from None
        if isinstance(exc, click.exceptions.Exit):
            raise SystemExit(exc.exit_code) from None
        raise


# The morning-review and reporting commands live beside this module; importing it
# registers them on `app`.

if __name__ == "__main__":
    main()
