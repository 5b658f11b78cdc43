"""The commands for the morning after: finish, apply and verify."""

from pathlib import Path
from typing import Annotated, Any

import typer

from overnight.cli.common import ConfigOpt, JsonOpt, emit_json, open_study
from overnight.errors import OvernightError, UsageError


def finish(
    config: ConfigOpt = None,
    squash: Annotated[bool, typer.Option("--squash", help="One commit for all keeps.")] = False,
    drop: Annotated[
        str | None, typer.Option("--drop", help="Keeps to leave out, e.g. 3,7.")
    ] = None,
    ablate: Annotated[
        bool, typer.Option("--ablate", help="Measure what each keep contributes by leaving it out.")
    ] = False,
    repeats: Annotated[
        int | None,
        typer.Option(help="Runs per variant for --ablate (default: the study's, at least 3)."),
    ] = None,
    patches: Annotated[
        Path | None, typer.Option("--patches", help="Also write the series as patch files here.")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Write overnight/<name>-final: the kept changes as a clean series to review and merge."""
    from contextlib import AbstractContextManager, nullcontext

    from overnight.review.finish import build_final, write_patches

    if repeats is not None and (repeats < 1 or not ablate):
        raise UsageError("--repeats: expected a number >= 1, together with --ablate")
    study = open_study(config)
    lock: AbstractContextManager[Any] = nullcontext()
    if ablate:
        from overnight.review.ablate import DEFAULT_REPEATS, ablation_lock, run_ablation

        lock = ablation_lock(study)  # refuse before writing anything while a run is going
    with lock:
        result = build_final(study, drop=drop, squash=squash)
        rows = result.rows()
        if patches is not None:
            result.patches = write_patches(study, result, patches)
        if ablate:
            count = repeats or max(DEFAULT_REPEATS, study.cfg.metric.repeats)
            ablation = run_ablation(study, result, count, lambda msg: typer.echo(msg, err=True))
            by_n = {r["experiment"]: r for r in ablation.rows}
            for row in rows:
                row.update(by_n[row["experiment"]])
    if as_json:
        emit_json(rows)
        return
    _print_finish(study, result)
    if ablate:
        _print_ablation(study, ablation)


def _print_finish(study: Any, result: Any) -> None:
    from overnight.git.workspace import git

    start, head = result.start, result.head
    n_commits = len(result.commits)
    typer.echo(f"wrote {result.branch}: {n_commits} commit{'s' * (n_commits != 1)} on top of "
               f"{start[:7]} (where the study started)")  # fmt: skip
    if result.previous and result.previous != head:
        typer.echo(f"  (replaced its previous head {result.previous[:7]})")
    for commit in result.commits:
        typer.echo("  " + git("log", "-1", "--format=%h %s", commit, cwd=study.root).strip())
    best = study.status()["best"]
    same = git("rev-parse", f"{head}^{{tree}}", f"{best['commit']}^{{tree}}", cwd=study.root)
    if len(set(same.split())) == 1:
        typer.echo(f"its tree is identical to the study's best (experiment {best['experiment']})")
    if result.dropped:
        typer.echo(f"left out: experiment(s) {', '.join(map(str, sorted(result.dropped)))}")
    if result.series.skipped:
        skipped = ", ".join(map(str, result.series.skipped))
        typer.echo(f"no commit for experiment(s) {skipped}: their change was already there")
    for path in result.patches:
        typer.echo(f"patch: {path}")
    typer.echo(f"next: git push <remote> {result.branch}, then open a pull request from it")


def _print_ablation(study: Any, ablation: Any) -> None:
    import statistics

    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    from overnight.judging.rules import fmt

    name = study.cfg.metric.name
    table, final_values = ablation.rows, ablation.final_values
    mean = statistics.fmean(final_values)
    title = f"ablation: {name} of the final branch {fmt(mean)} over {len(final_values)} runs"
    out = Table(title=Text(title + "; contribution = how much worse without it"))
    for col in ("#", "description", "contribution", "±95%", "effect", "note"):
        out.add_column(col, overflow="fold")
    for r in table:
        ci = "—" if r["ci95"] is None else f"{r['ci95']:.4g}"
        contribution = "—" if r["contribution"] is None else f"{r['contribution']:+.4g}"
        out.add_row(str(r["experiment"]), Text(r["description"]), contribution, ci, r["effect"],
                    Text(r["error"] or r["note"] or ""))  # fmt: skip
    Console().print(out)
    negligible = [str(r["experiment"]) for r in table if r["hitchhiker"]]
    if negligible:
        typer.echo(f"hitchhikers (removed alone, indistinguishable from zero) — negligible: "
                   f"experiment(s) {', '.join(negligible)}")  # fmt: skip
    for r in table:
        if r["dependents"]:
            typer.echo(f"experiment {r['experiment']} is built on by experiment(s) "
                       f"{', '.join(map(str, r['dependents']))}: its row is for them together")
    s = ablation.smallest
    if len(s["experiments"]) < len(table):
        kept = ", ".join(map(str, s["experiments"])) or "none (the start commit)"
        how = "the same code as the final branch" if s["same_code"] else (
            f"{name} {fmt(statistics.fmean(s['values']))}, short of the final by "
            f"{s['shortfall']:+.4g}" + ("" if s["ci95"] is None else f" ± {s['ci95']:.4g}"))
        others = ",".join(str(r["experiment"]) for r in table
                          if r["experiment"] not in s["experiments"])  # fmt: skip
        typer.echo(f"smallest set reaching the final value: experiment(s) {kept} ({how}); "
                   f"keep only those with `overnight finish --drop {others}`")  # fmt: skip
    typer.echo(f"table written to {ablation.path}")


def apply_change(
    n: Annotated[int, typer.Argument(help="Experiment number.", metavar="N")],
    config: ConfigOpt = None,
) -> None:
    """Apply experiment N's change (kept or not) to your checkout as an unstaged edit."""
    from overnight.review.apply import apply_experiment

    study = open_study(config)
    res = apply_experiment(study, n)
    if not res.changed:
        typer.echo(f"experiment {n}'s change is already in your checkout; nothing changed")
        return
    how = {"proposer": f"re-applied by the {res.by} proposer",
           "merge": "merged word by word"}.get(res.how, res.how)  # fmt: skip
    typer.echo(f"applied experiment {n} ({res.description}) to {', '.join(res.changed)} "
               f"as an unstaged change ({how}); review it with `git diff`")  # fmt: skip
    if res.already:
        typer.echo(f"already had the change: {', '.join(res.already)}")


def accept(
    n: Annotated[int, typer.Argument(help="Experiment number of a suspect.")],
    config: ConfigOpt = None,
) -> None:
    """Keep suspect N (a keep held for the morning review) on the study branch."""
    from overnight.review.accept import accept_suspect

    study = open_study(config)
    rec = accept_suspect(study, n)
    gain = rec.meta["gain"]
    marginal = " (marginal)" if gain["marginal"] else ""
    typer.echo(f"accepted experiment {n} ({rec.description}): the best now, "
               f"{(rec.commit or '')[:7]} on {study.branch}; gain {gain['gain']:.4g} "
               f"{study.cfg.metric.name}{marginal}")  # fmt: skip


def verify(config: ConfigOpt = None, as_json: JsonOpt = False) -> None:
    """Recompute every verdict from the ledger's stored values; exit 1 on any disagreement."""
    from overnight.judging.replay import verify_ledger

    study = open_study(config)
    ledger = study.open_ledger()
    try:
        result = verify_ledger(ledger)
    finally:
        ledger.close()
    if as_json:
        emit_json(result.as_dict())
    else:
        for n, problem in result.disagreements:
            typer.echo(f"experiment {n}: {problem}")
        skipped = f", {len(result.skipped)} not recomputable" if result.skipped else ""
        verdict = "all agree" if result.ok else f"{len(result.disagreements)} disagreement(s)"
        typer.echo(f"verified {result.checked} verdict(s){skipped}: {verdict}")
    if not result.ok:
        raise OvernightError(
            f"{len(result.disagreements)} verdict(s) do not follow from the ledger's values"
        )
