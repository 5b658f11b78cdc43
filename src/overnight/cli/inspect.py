"""`overnight status`, `log` and `show`: reading a study, during the night or after."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from overnight.cli.common import ConfigOpt, JsonOpt, emit_json, open_study
from overnight.judging.rules import fmt


def status(config: ConfigOpt = None, as_json: JsonOpt = False) -> None:
    """Where the study stands: baseline, best, counts, cost."""
    from overnight.cli.view import best_line, counts_line, model_line, rate_line

    study = open_study(config)
    st = study.status()
    if as_json:
        emit_json(st)
        return
    typer.echo(f"study {st['study']} · branch {st['branch']} · {st['experiments']} experiments")
    typer.echo(best_line(st))
    typer.echo(counts_line(st))
    typer.echo(rate_line(st))
    if model_line(st):
        typer.echo(model_line(st))
    if st["pending"]:
        typer.echo(f"interrupted experiment(s) {st['pending']} will be re-run on resume")
    if st.get("constraints"):
        typer.echo(_constraints_line(st["constraints"], "best"))
    from overnight.store.status import drift_line, holdout_line

    for line in (holdout_line(st, st["metric"]["name"]), drift_line(st)):
        if line:
            typer.echo(line)


def log(
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
    tsv: Annotated[bool, typer.Option("--tsv", help="Print results.tsv.")] = False,
) -> None:
    """Every experiment with its verdict."""
    study = open_study(config)
    records = study.log()
    if as_json:
        emit_json([r.public() for r in records], compact=len(records) > 1000)
        return
    if tsv:
        if study.tsv_path.exists():
            typer.echo(study.tsv_path.read_text(), nl=False)
        return
    from rich.console import Console
    from rich.table import Table

    from overnight.cli.view import STATUS_STYLE

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
    from overnight.isolation.runner import tail_text

    study = open_study(config)
    info = study.show(n)
    exp_dir = Path(info["dir"])
    if tasks:
        _show_tasks(study, n, as_json)
        return
    if as_json:
        emit_json(info)
        return
    typer.echo(f"experiment {n}: {info['status'] or info['state']}  {info['description']}")
    typer.echo(f"value: {fmt(info['value'])}   wall: {info['wall_s']}   commit: {info['commit']}")
    if info["reason"]:
        typer.echo(f"reason: {info['reason']}")
    if info["rationale"]:
        typer.echo(f"rationale: {info['rationale']}")
    if (info.get("meta") or {}).get("format"):
        usage = info.get("usage") or {}
        typer.echo(
            _format_line(info["meta"], json.loads(usage) if isinstance(usage, str) else usage)
        )
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
        emit_json({
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


def _format_line(meta: dict[str, Any], usage: dict[str, Any]) -> str:
    """`show`: the llm proposer's edit format, calls and prompt budget."""
    repair = meta.get("repair") or {}
    line = f"format: {meta['format']}"
    if repair:
        line += " (repaired)" if repair.get("ok") else " (a repair turn did not help)"
    line += f" · {usage.get('calls', 1)} call(s)"
    budget = meta.get("budget") or {}
    if budget.get("context"):
        line += (f" · prompt ~{budget.get('prompt_tokens', '?')} + output "
                 f"{budget.get('max_tokens', '?')} of {budget['context']} tokens")  # fmt: skip
    if usage.get("cache_read_input_tokens"):
        line += f" · {usage['cache_read_input_tokens']} prompt tokens from the cache"
    return line


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
