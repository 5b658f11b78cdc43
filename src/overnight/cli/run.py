"""`overnight init` and `overnight run`."""

import re
import sys
from pathlib import Path
from typing import Annotated, Any

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
    agent: Annotated[
        str | None,
        typer.Option(help="Also write the skill/instructions and MCP registration for a coding "
                     "agent: claude | codex | generic (see `overnight mcp`)."),
    ] = None,
) -> None:
    """Write a commented overnight.toml and a program.md template (with --agent: the files
    that let a coding agent drive the study through `overnight mcp`)."""
    from overnight.agentnative.skill import AGENTS
    from overnight.cli.templates import render_config, render_program
    from overnight.git.workspace import find_repo_root

    if agent is not None and agent not in AGENTS:
        raise UsageError(f"--agent: expected one of {', '.join(AGENTS)}, got {agent!r}")
    in_git = True
    try:
        root = find_repo_root(Path.cwd())
    except UsageError:
        root, in_git = Path.cwd(), False
    name = name or re.sub(r"[^A-Za-z0-9_.-]+", "-", root.name).strip("-.") or "study"
    surfaces = [s.strip() for s in surface.split(",") if s.strip()]
    if not surfaces:
        raise UsageError(f"--surface: expected a file name, e.g. train.py, got {surface!r}")
    run = run or f"python {surfaces[0]}"
    targets = {root / "overnight.toml": None, root / "program.md": None}
    existing = [p.name for p in targets if p.exists()]
    if agent is not None and (root / "overnight.toml").exists():
        # A study is set up already: only the agent's files are written (--force: over ours).
        _init_agent(root, agent, force)
        return
    if existing and not force:
        raise UsageError(f"{', '.join(existing)} already exist(s); use --force to overwrite")
    text = render_config(name=name, surface=surfaces, run=run, metric=metric, goal=goal,
                         budget=budget)  # fmt: skip
    _check_init(text)
    (root / "overnight.toml").write_text(text)
    (root / "program.md").write_text(
        render_program(name=name, surface=surfaces, metric=metric, goal=goal, budget=budget)
    )
    typer.echo(f"wrote {root / 'overnight.toml'} and {root / 'program.md'}")
    if agent is not None:
        _init_agent(root, agent, force)
    if not in_git:
        typer.echo(f"note: {root} is not a git repository; overnight keeps every experiment as "
                   "a git commit, so run `git init` and commit your code first")  # fmt: skip
        typer.echo("next: git init, edit program.md, commit everything, then `overnight run`")
        return
    if agent is not None:
        typer.echo("next: edit program.md, commit, then ask your agent to run the study")
        return
    typer.echo("next: edit program.md, commit, then `overnight run`")


def _init_agent(root: Path, agent: str, force: bool) -> None:
    from overnight.agentnative.skill import StudyFacts, write_agent_files
    from overnight.config import load_config

    cfg = load_config(root / "overnight.toml")
    facts = StudyFacts(cfg.study.name, list(cfg.study.surface), cfg.metric.name, cfg.metric.goal,
                       cfg.study.budget)  # fmt: skip
    for line in write_agent_files(root, agent, facts, force):
        typer.echo(line)


# The keys `init` fills in from its flags.
_INIT_FLAGS = {"[study].name": "--name", "[study].surface": "--surface", "[run].command": "--run",
               "[metric].name": "--metric", "[metric].goal": "--goal",
               "[study].budget": "--budget"}  # fmt: skip


def _check_init(text: str) -> None:
    """Validate the config `init` is about to write, as `run` will, before anything is
    written; a mistake names the flag it came from."""
    import tomllib

    from overnight.config import CONFIG_FILE, config_from_dict, display_path
    from overnight.errors import ConfigError

    try:
        config_from_dict(tomllib.loads(text), path=Path(CONFIG_FILE))
    except ConfigError as exc:
        message = str(exc).removeprefix(f"{display_path(Path(CONFIG_FILE))}: ")
        key = next((k for k in _INIT_FLAGS if message.startswith(f"{k}:")), None)
        if key is None:
            raise
        raise UsageError(_INIT_FLAGS[key] + message[len(key):]) from None


# -- run -------------------------------------------------------------------------------------


def run(
    config: ConfigOpt = None,
    experiments: Annotated[
        int | None, typer.Option("--experiments", "-n", min=0, help="Experiments to run now.")
    ] = None,
    hours: Annotated[float | None, typer.Option(help="Stop after this many hours.")] = None,
    proposer: Annotated[
        str | None, typer.Option(help="auto | llm | agent | tune | mod:Class")
    ] = None,
    workers: Annotated[
        int | None, typer.Option(min=1, help="Parallel experiment slots.")
    ] = None,
    executor: Annotated[str | None, typer.Option(help="local | ray")] = None,
    seed: Annotated[int, typer.Option(help="Seed of the proposer and the runs.")] = 0,
    patience: Annotated[
        int | None, typer.Option(min=1, help="Stop after N non-keeps in a row.")
    ] = None,
    max_cost: Annotated[
        float | None, typer.Option("--max-cost", min=0, help="USD cap on model calls.")
    ] = None,
    plain: Annotated[bool, typer.Option("--plain", help="One line per experiment.")] = False,
    allow_dirty: Annotated[
        bool,
        typer.Option("--allow-dirty", help="Run although the checkout has uncommitted changes "
                     "(the committed versions are used)."),
    ] = False,
    lookahead: Annotated[
        int | None,
        typer.Option(min=0, help="Proposals prepared while runs go (default: one per slot; 0: "
                     "propose only after each verdict)."),
    ] = None,
) -> None:
    """Start the study, or resume it. Exit 0 done, 3 stopped by a circuit breaker ([stop]),
    130/143 stopped by Ctrl-C/SIGTERM."""
    if hours is not None and hours <= 0:
        raise UsageError(f"--hours: expected a positive number, got {hours}")
    study = open_study(config)
    # The first line before the heavy imports (the loop, executors, proposers): a user sees
    # at once that the study was found and the night is being set up.
    typer.echo(f"overnight: study {study.name} (branch {study.branch}): setting up…")
    from overnight.cli.view import LiveView, PlainView, View
    from overnight.experiment.loop import RunOptions, run_study
    from overnight.isolation import secrets
    from overnight.isolation.redact import proposer_key_env

    secrets.seal([proposer_key_env(study.cfg.proposer)])  # whatever the variable's name
    opts = RunOptions(
        experiments=experiments, hours=hours, patience=patience, proposer=proposer,
        seed=seed, max_cost=max_cost, workers=workers, executor=executor, lookahead=lookahead,
        allow_dirty=allow_dirty,
    )  # fmt: skip
    view: View = PlainView() if plain or not sys.stdout.isatty() else LiveView(study.name)
    try:
        summary = run_study(study, opts, view)
    finally:
        view.close()
    raise typer.Exit(exit_code(summary))


# Exit codes of `overnight run` besides 0 (done), 1 (failure) and 2 (usage): README.
EXIT_BREAKER = 3


def exit_code(summary: Any) -> int:
    """0 when the night ended at a limit (or nothing was left to do), 3 when a circuit
    breaker stopped it, 128 + the signal number (130, 143) after Ctrl-C or SIGTERM."""
    from overnight.experiment.stopping import BREAKER

    if summary.signal is not None:
        return 128 + int(summary.signal)
    return EXIT_BREAKER if summary.stopped_by == BREAKER else 0


