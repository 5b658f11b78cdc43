"""`overnight status`, `log` and `show`: reading a study, during the night or after."""

from pathlib import Path
from typing import Annotated, Any

import typer

from overnight.cli.common import ConfigOpt, JsonOpt, emit_json, open_study


def status(config: ConfigOpt = None, as_json: JsonOpt = False) -> None:
    """Where the study stands: baseline, best, counts, cost."""
    from overnight.cli.view import best_line, counts_line, model_line, rate_line

    study = open_study(config, cached=True)
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
    for line in stop_lines(st):
        typer.echo(line)
    if st["suspects"]:
        more = " …" if len(st["suspects"]) > 20 else ""
        shown = ", ".join(map(str, st["suspects"][:20])) + more
        typer.echo(f"held for your review (suspect): {shown}; see `overnight show N`, keep one "
                   "with `overnight accept N`")  # fmt: skip
    if st.get("constraints"):
        typer.echo(_constraints_line(st["constraints"], "best"))
    from overnight.store.status import controls_line, drift_line, holdout_line

    for line in (holdout_line(st, st["metric"]["name"]), drift_line(st), controls_line(st)):
        if line:
            typer.echo(line)


def stop_lines(st: dict[str, Any]) -> list[str]:
    """How the last run ended, and what the next `overnight run` will do about it."""
    lines = []
    if st.get("stopped_because"):
        lines.append(f"last run ended: {st['stopped_because']}")
    pending = [n for n in st["pending"] if n != 0]
    if 0 in st["pending"]:
        lines.append("the baseline has not been measured yet: `overnight run` measures it first"
                     + ("" if st.get("stopped_by") != "error" else " (fix what failed first)"))
    if pending:
        lines.append(f"interrupted experiment(s) {pending} will be re-run on resume")
    return lines


def log(
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
    tsv: Annotated[bool, typer.Option("--tsv", help="Print results.tsv.")] = False,
) -> None:
    """Every experiment with its verdict."""
    study = open_study(config, cached=True)
    records = study.log()
    if as_json:
        emit_json([r.public() for r in records], compact=len(records) > 1000)
        return
    if tsv:
        if study.tsv_path.exists():
            typer.echo(study.tsv_path.read_text(), nl=False)
        return
    from overnight.cli.view import log_line

    # Plain lines, not a rich table: a long log prints at once and starts fast, and a
    # description holding "[/tmp]" is text, never markup.
    typer.echo(f"{study.name}: {study.cfg.metric.name} ({study.cfg.metric.goal}), "
               f"{len(records)} experiments")  # fmt: skip
    width = len(str(max((r.experiment for r in records), default=0)))
    if records:
        typer.echo("\n".join(log_line(r, width) for r in records))


def show(
    n: Annotated[int, typer.Argument(help="Experiment number.", metavar="N")],
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
    from overnight.cli.view import seconds
    from overnight.isolation.capture import tail_text
    from overnight.judging.rules import fmt

    study = open_study(config, cached=True)
    info = study.show(n)
    exp_dir = Path(info["dir"])
    if tasks:
        _show_tasks(study, n, as_json)
        return
    if as_json:
        emit_json(info)
        return
    typer.echo(f"experiment {n}: {info['status'] or info['state']}  {info['description']}")
    typer.echo(f"value: {fmt(info['value'])}   wall: {seconds(info['wall_s'])}   "
               f"commit: {info['commit'] or '—'}")  # fmt: skip
    if info["reason"]:
        typer.echo(f"reason: {info['reason']}")
    if info["rationale"]:
        typer.echo(f"rationale: {info['rationale']}")
    if (info.get("meta") or {}).get("format"):
        import json as _json

        usage = info.get("usage") or {}
        typer.echo(
            _format_line(info["meta"], _json.loads(usage) if isinstance(usage, str) else usage)
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
                       "source": t.source, "pass_rate": t.pass_rate,
                       "trials": [{"trial": r.trial, "passed": r.ok, "score": r.score,
                                   "error": r.error, "source": r.source} for r in t.trials]}
                      for t in cand.tasks.values()],
            **asdict(diff), "problems": cand.problems,
        })  # fmt: skip
        return
    if not cand.tasks:
        typer.echo(f"experiment {n} wrote no task traces (see $OVERNIGHT_TRACE_DIR in the docs)")
    marks = {t: "fixed" for t in diff.fixed} | {t: "REGRESSED" for t in diff.regressed}
    typer.echo(f"experiment {n}: {cand.passed_text()} (best, experiment {best_n}: "
               f"{best.passed_text('')})")  # fmt: skip
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
    from overnight.judging.rules import fmt

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
    from overnight.judging.rules import fmt

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
    if meta.get("control"):
        c = meta["control"]
        lines.append(f"control: the unchanged best (experiment {c['of']}) resubmitted blind; "
                     f"the rule gave {c['verdict']}"
                     + (" (a false keep)" if c.get("would_keep") else ""))  # fmt: skip
    if meta.get("gain"):
        g = meta["gain"]
        interval = ("no interval" if g["low"] is None
                    else f"{g['level']:.0%} CI {g['low']:.4g} to {g['high']:.4g}")  # fmt: skip
        lines.append(f"gain: {g['gain']:.4g} ({interval}{', marginal' if g['marginal'] else ''})")
    if meta.get("isolation"):
        lines.append(f"isolation: {meta['isolation']}")
    moved = verdict.get("transfer") or meta.get("transfer") or {}
    if moved.get("transferred"):
        how = f"by the {moved['by']} proposer's own rebase" if moved.get("how") == "proposer" \
            else "with a word-level three-way merge"
        lines.append(f"transferred: made on {str(moved.get('from'))[:7]}, carried onto "
                     f"experiment {moved.get('onto')} {how}, then measured there")  # fmt: skip
    return lines
