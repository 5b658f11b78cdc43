"""What every command shares: the typer app, common options, opening a study, JSON out."""

from pathlib import Path
from typing import Annotated, Any

import typer

from overnight import jsonout

app = typer.Typer(
    add_completion=False,
    help="Run the Karpathy loop: edit one file, measure one metric, keep or revert, all night.",
    pretty_exceptions_enable=False,
    # Plain help: rendering it with rich would cost every `--help` the import of rich.
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        from overnight import __version__

        typer.echo(f"overnight {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option("--version", is_eager=True, callback=_version, help="Print the version."),
    ] = False,
) -> None:
    """Run the Karpathy loop: edit one file, measure one metric, keep or revert, all night."""

ConfigOpt = Annotated[
    Path | None, typer.Option("--config", "-c", help="Path of overnight.toml (default: repo root).")
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON.")]


def open_study(config: Path | None, *, cached: bool = False) -> Any:
    """The study; `cached` for commands that only read it (see store/config_cache.py)."""
    from overnight.store.study import Study

    return Study.open(config, cached=cached)


def emit_json(data: Any, compact: bool = False) -> None:
    # Indenting 100,000 log rows costs seconds in the stdlib encoder; big outputs go compact.
    # Strict JSON: a run that printed `aux: nan` gives null, never a bare NaN.
    typer.echo(jsonout.dumps(data, indent=None if compact else 2))

