"""The `overnight` command. Thin: parse, call the library, render."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from overnight.errors import OvernightError, UsageError
from overnight.judge import fmt

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


def _open(config: Path | None) -> Any:
    from overnight.study import Study

    return Study.open(config)


def _emit_json(data: Any, compact: bool = False) -> None:
    # Indenting 100,000 log rows costs seconds in the stdlib encoder; big outputs go compact.
    typer.echo(json.dumps(data, indent=None if compact else 2, default=str))


# -- init ------------------------------------------------------------------------------------


@app.command()
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
    from overnight.config import parse_duration
    from overnight.templates import render_config, render_program
    from overnight.workspace import find_repo_root

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


@app.command()
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
    from overnight.loop import RunOptions, run_study
    from overnight.view import LiveView, PlainView, View

    for flag, value in (
        ("--experiments", experiments), ("--patience", patience), ("--lookahead", lookahead),
    ):  # fmt: skip
        if value is not None and value < 0:
            raise UsageError(f"{flag}: expected a number >= 0, got {value}")
    if hours is not None and hours <= 0:
        raise UsageError(f"--hours: expected a positive number, got {hours}")
    study = _open(config)
    opts = RunOptions(
        experiments=experiments, hours=hours, patience=patience, proposer=proposer,
        seed=seed, max_cost=max_cost, workers=workers, executor=executor, lookahead=lookahead,
    )  # fmt: skip
    view: View = PlainView() if plain or not sys.stdout.isatty() else LiveView(study.name)
    try:
        run_study(study, opts, view)
    finally:
        view.close()


# -- status, log, show -----------------------------------------------------------------------


@app.command()
def status(config: ConfigOpt = None, as_json: JsonOpt = False) -> None:
    """Where the study stands: baseline, best, counts, cost."""
    from overnight.view import best_line, counts_line, rate_line

    study = _open(config)
    st = study.status()
    if as_json:
        _emit_json(st)
        return
    typer.echo(f"study {st['study']} · branch {st['branch']} · {st['experiments']} experiments")
    typer.echo(best_line(st))
    typer.echo(counts_line(st))
    typer.echo(rate_line(st))
    if st["pending"]:
        typer.echo(f"interrupted experiment(s) {st['pending']} will be re-run on resume")
    if st.get("constraints"):
        typer.echo(_constraints_line(st["constraints"], "best"))
    from overnight.holdout import drift_line, holdout_line

    for line in (holdout_line(st, st["metric"]["name"]), drift_line(st)):
        if line:
            typer.echo(line)


@app.command()
def log(
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
    tsv: Annotated[bool, typer.Option("--tsv", help="Print results.tsv.")] = False,
) -> None:
    """Every experiment with its verdict."""
    study = _open(config)
    records = study.log()
    if as_json:
        _emit_json([r.public() for r in records], compact=len(records) > 1000)
        return
    if tsv:
        if study.tsv_path.exists():
            typer.echo(study.tsv_path.read_text(), nl=False)
        return
    from rich.console import Console
    from rich.table import Table

    from overnight.view import STATUS_STYLE

    table = Table(title=f"{study.name}: {study.cfg.metric.name} ({study.cfg.metric.goal})")
    for col in ("#", "status", study.cfg.metric.name, "wall", "commit", "description", "reason"):
        table.add_column(col, overflow="fold")
    for r in records:
        style = STATUS_STYLE.get(r.status or "", "")
        table.add_row(
            str(r.experiment), f"[{style}]{r.status}[/]" if style else str(r.status),
            fmt(r.value), f"{r.wall_s:.1f}s" if r.wall_s is not None else "—",
            (r.commit or "")[:7], r.description, "" if r.status == "keep" else r.reason,
        )  # fmt: skip
    Console().print(table)


@app.command()
def show(
    n: Annotated[int, typer.Argument(help="Experiment number.")],
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
    prompt: Annotated[
        bool, typer.Option("--prompt", help="Show the proposer's prompt and response.")
    ] = False,
    tasks: Annotated[
        bool, typer.Option("--tasks", help="Per-task outcomes, fixed/regressed vs the best.")
    ] = False,
) -> None:
    """One experiment: diff, metrics, verdict and reason, rationale, log tails."""
    from overnight.runner import tail_text

    study = _open(config)
    info = study.show(n)
    exp_dir = Path(info["dir"])
    if tasks:
        _show_tasks(study, n, as_json)
        return
    if as_json:
        _emit_json(info)
        return
    typer.echo(f"experiment {n}: {info['status'] or info['state']}  {info['description']}")
    typer.echo(f"value: {fmt(info['value'])}   wall: {info['wall_s']}   commit: {info['commit']}")
    if info["reason"]:
        typer.echo(f"reason: {info['reason']}")
    if info["rationale"]:
        typer.echo(f"rationale: {info['rationale']}")
    if info.get("constraints"):
        typer.echo(_constraints_line(info["constraints"], "here"))
    for line in _trust_lines(info):
        typer.echo(line)
    if info["metrics"]:
        typer.echo("metrics: " + ", ".join(f"{k}={fmt(v)}" for k, v in info["metrics"].items()))
    if info["diff"]:
        typer.echo("\n" + info["diff"])
    for name in ("run.stdout", "run.stderr", "metric.stdout", "metric.stderr", "check.stdout"):
        text = tail_text(exp_dir / name, 1500)
        if text.strip():
            typer.echo(f"--- {name} (tail) ---\n{text.rstrip()}")
    if prompt:
        for name in ("prompt.txt", "response.txt"):
            path = exp_dir / name
            typer.echo(f"--- {name} ---\n{path.read_text() if path.exists() else '(none)'}")


def _show_tasks(study: Any, n: int, as_json: bool) -> None:
    from dataclasses import asdict

    from overnight.traces import diff_tasks, experiment_traces

    best_n = study.status()["best"]["experiment"]
    cand = experiment_traces(study.exp_dir(n))
    best = experiment_traces(study.exp_dir(best_n))
    diff = diff_tasks(best, cand)
    if as_json:
        _emit_json({
            "experiment": n, "best": best_n,
            "tasks": [{"task": t.task, "passed": t.ok, "score": t.score, "error": t.error,
                       "source": t.source} for t in cand.tasks.values()],
            **asdict(diff), "problems": cand.problems,
        })  # fmt: skip
        return
    if not cand.tasks:
        typer.echo(f"experiment {n} wrote no task traces (see $OVERNIGHT_TRACE_DIR in the docs)")
    marks = {t: "fixed" for t in diff.fixed} | {t: "REGRESSED" for t in diff.regressed}
    typer.echo(f"experiment {n}: {cand.passed()}/{len(cand.tasks)} tasks passed "
               f"(best, experiment {best_n}: {best.passed()}/{len(best.tasks)})")  # fmt: skip
    for t in sorted(cand.tasks.values(), key=lambda t: (t.ok is not False, t.task)):
        extra = f"  [{marks[t.task]}]" if t.task in marks and n != best_n else ""
        error = f"  {t.error.strip().splitlines()[0][:100]}" if t.error else ""
        typer.echo(f"  {t.outcome():<12} {t.task}{extra}{error}")
    if n != best_n:
        typer.echo(f"vs best: {len(diff.fixed)} fixed, {len(diff.regressed)} regressed, "
                   f"{len(diff.still_failing)} still failing")  # fmt: skip
    for problem in cand.problems:
        typer.echo(f"  malformed trace: {problem}")


# -- morning review: finish, apply -----------------------------------------------------------


def _constraints_line(rows: list[dict[str, Any]], who: str) -> str:
    parts = []
    for c in rows:
        bounds = [f">= {fmt(c['min'])}" if c["min"] is not None else "",
                  f"<= {fmt(c['max'])}" if c["max"] is not None else ""]  # fmt: skip
        state = "not reported" if c["ok"] is None else ("ok" if c["ok"] else "BROKEN")
        limit = " and ".join(b for b in bounds if b)
        parts.append(f"{c['name']} {limit} ({who} {fmt(c['value'])}, {state})")
    return "constraints: " + "; ".join(parts)


def _trust_lines(info: dict[str, Any]) -> list[str]:
    """`show`: the measurements per kind, the rule that decided, the isolation the runs had."""
    lines = []
    by_kind: dict[str, list[str]] = {}
    for m in info.get("measurements") or []:
        by_kind.setdefault(m["kind"], []).append(fmt(m["value"]))
    if by_kind:
        lines.append("measured: " + "; ".join(f"{k} {', '.join(v)}" for k, v in by_kind.items()))
    meta = info.get("meta") or {}
    verdict = meta.get("verdict") or {}
    if verdict.get("rule"):
        rule = verdict["rule"]
        lines.append(
            f"rule: {verdict.get('method')} (alpha {rule['alpha']:g}, min_improvement "
            f"{rule['threshold']:.4g}), decided at the {verdict.get('stage')} stage"
        )
    if meta.get("isolation"):
        lines.append(f"isolation: {meta['isolation']}")
    return lines


# -- verify ----------------------------------------------------------------------------------


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
from overnight import cli_review  # noqa: E402, F401

if __name__ == "__main__":
    main()
