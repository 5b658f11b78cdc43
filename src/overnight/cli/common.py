"""What every command shares: the typer app, common options, opening a study, JSON out."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from overnight import jsonout

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Run the Karpathy loop: edit one file, measure one metric, keep or revert, all night.",
    pretty_exceptions_enable=False,
)

ConfigOpt = Annotated[
    Path | None, typer.Option("--config", "-c", help="Path of overnight.toml (default: repo root).")
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON.")]


def open_study(config: Path | None) -> Any:
    from overnight.store.study import Study

    return Study.open(config)


def emit_json(data: Any, compact: bool = False) -> None:
    # Indenting 100,000 log rows costs seconds in the stdlib encoder; big outputs go compact.
    # Strict JSON: a run that printed `aux: nan` gives null, never a bare NaN.
    typer.echo(jsonout.dumps(data, indent=None if compact else 2))

