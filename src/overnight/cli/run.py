"""`overnight init` and `overnight run`."""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Annotated

import typer

from overnight.cli.common import ConfigOpt, open_study
from overnight.errors import UsageError


def init(
    surface: Annotated[str, typer.Option(help="The file a proposal may change.")] = "train.py",
    run: Annotated[str | None, typer.Option("--run", help="Experiment command.")] = None,
    metric: Annotated[str, typer.Option(help="Name of the metric line to read.")] = "score",
    goal: Annotated[str, typer.Option(help="minimize or maximize.")] = "minimize",
    budget: Annotated[str, typer.Option(help="Per-run wall-clock limit, e.g. 5m.")] = "5m",
    name: Annotated[str | None, typer.Option(help="Study name (branch overnight/<name>).")] = None,
    force: Annotated[bool, typer.Option(help="Overwrite existing files.")] = False,
) -> None:
    """Write a commented overnight.toml and a program.md template."""
    from overnight.cli.templates import render_config, render_program
    from overnight.config import parse_duration
    from overnight.git.workspace import find_repo_root

    if goal not in ("minimize", "maximize"):
        raise UsageError(f"--goal: expected minimize or maximize, got {goal!r}")
    try:
        parse_duration(budget)
    except ValueError as exc:
        raise UsageError(f"--budget: {exc}, got {budget!r}") from None
    try:
        root = find_repo_root(Path.cwd())
    except UsageError:
        root = Path.cwd()
    name = name or re.sub(r"[^A-Za-z0-9_.-]+", "-", root.name).strip("-.") or "study"
    surfaces = [s.strip() for s in surface.split(",") if s.strip()]
    run = run or f"python {surfaces[0]}"
    targets = {root / "overnight.toml": None, root / "program.md": None}
    existing = [p.name for p in targets if p.exists()]
    if existing and not force:
        raise UsageError(f"{', '.join(existing)} already exist(s); use --force to overwrite")
    (root / "overnight.toml").write_text(
        render_config(name=name, surface=surfaces, run=run, metric=metric, goal=goal, budget=budget)
    )
    (root / "program.md").write_text(
        render_program(name=name, surface=surfaces, metric=metric, goal=goal, budget=budget)
    )
    typer.echo(f"wrote {root / 'overnight.toml'} and {root / 'program.md'}")
    typer.echo("next: edit program.md, commit, then `overnight run`")


# -- run -------------------------------------------------------------------------------------


def run(
    config: ConfigOpt = None,
    experiments: Annotated[
        int | None, typer.Option("--experiments", "-n", help="Experiments to run now.")
    ] = None,
    hours: Annotated[float | None, typer.Option(help="Stop after this many hours.")] = None,
    proposer: Annotated[
        str | None, typer.Option(help="auto | llm | agent | tune | mod:Class")
    ] = None,
    workers: Annotated[int | None, typer.Option(help="Parallel experiment slots.")] = None,
    executor: Annotated[str | None, typer.Option(help="local | ray")] = None,
    seed: Annotated[int, typer.Option(help="Seed of the proposer and the runs.")] = 0,
    patience: Annotated[int | None, typer.Option(help="Stop after N non-keeps in a row.")] = None,
    max_cost: Annotated[
        float | None, typer.Option("--max-cost", help="USD cap on model calls.")
    ] = None,
    plain: Annotated[bool, typer.Option("--plain", help="One line per experiment.")] = False,
    lookahead: Annotated[
        int | None,
        typer.Option(help="Proposals prepared while runs go (default: one per slot; 0: "
                     "propose only after each verdict)."),
    ] = None,
) -> None:
    """Start the study, or resume it."""
    from overnight.cli.view import LiveView, PlainView, View
    from overnight.experiment.loop import RunOptions, run_study

    for flag, value in (
        ("--experiments", experiments), ("--patience", patience), ("--lookahead", lookahead),
    ):  # fmt: skip
        if value is not None and value < 0:
            raise UsageError(f"{flag}: expected a number >= 0, got {value}")
    if hours is not None and hours <= 0:
        raise UsageError(f"--hours: expected a positive number, got {hours}")
    study = open_study(config)
    from overnight.isolation import secrets
    from overnight.isolation.redact import proposer_key_env

    secrets.seal([proposer_key_env(study.cfg.proposer)])  # whatever the variable's name
    opts = RunOptions(
        experiments=experiments, hours=hours, patience=patience, proposer=proposer,
        seed=seed, max_cost=max_cost, workers=workers, executor=executor, lookahead=lookahead,
    )  # fmt: skip
    view: View = PlainView() if plain or not sys.stdout.isatty() else LiveView(study.name)
    try:
        run_study(study, opts, view)
    finally:
        view.close()


