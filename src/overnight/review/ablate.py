"""`overnight finish --ablate`: how much each keep matters, measured by leaving it out.

A greedy search keeps whatever measured better once, so after a night some keeps are luck
(noise that happened to favour them) or were overtaken by later ones. Ablation re-measures
the final branch and every leave-one-out variant with repeats, interleaved round by round
and with the same seed per round (so slow drift of the machine hits every variant alike and
the comparison is paired), and reports each keep's contribution with its uncertainty.
"""

from __future__ import annotations

import json
import math
import shutil
import statistics
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from overnight.errors import OvernightError, UsageError
from overnight.executors.local import LocalExecutor
from overnight.experiment.measure import Measurer
from overnight.experiment.setup import prepare_runs
from overnight.git.workspace import git
from overnight.judging.constraints import check_constraints
from overnight.judging.rules import fmt, gain
from overnight.review.finish import FinishResult, ReplayConflict, commit_tree, replay
from overnight.store.lock import study_lock
from overnight.store.study import Study

DEFAULT_REPEATS = 3
SLOT = "ablate"  # the worktree ablation runs in (.overnight/worktrees/<name>-ablate)
# Two-sided 95% critical values of Student's t by degrees of freedom: with 3 repeats the
# standard error itself is so uncertain that 2·SE would call noise a contribution.
_T975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306,
         9: 2.262, 10: 2.228, 12: 2.179, 15: 2.131, 20: 2.086, 30: 2.042, 60: 2.000}  # fmt: skip


def t_critical(df: int) -> float:
    usable = [d for d in _T975 if d <= df]
    return _T975[max(usable)] if usable else _T975[1]


@contextmanager
def ablation_lock(study: Study) -> Iterator[None]:
    """Hold the study lock: an ablation measuring next to a running loop would compete with
    it for the machine and skew both, and a run must not start while we measure."""
    stack = ExitStack()
    try:
        stack.enter_context(study_lock(study.state_dir, study.name))
    except UsageError as exc:
        raise UsageError(
            f"cannot ablate now: {exc}. Ablation needs the machine to itself; wait for the "
            "run to end (or stop it), then run `overnight finish --ablate` again."
        ) from None
    with stack:
        yield


@dataclass
class Variant:
    label: str  # "final" or "without-<n>"
    removed: int | None
    commit: str | None
    error: str | None = None  # why it could not be built or failed to run
    values: list[float] = field(default_factory=list)
    metrics: dict[str, float] = field(default_factory=dict)


def _variants(study: Study, result: FinishResult) -> list[Variant]:
    ws, keeps = study.ws, result.series.keeps
    out = [Variant("final", None, result.head)]
    for keep in keeps:
        others = [k for k in keeps if k.n != keep.n]
        label = f"without-{keep.n}"
        try:
            series = replay(ws, result.start, others)
        except ReplayConflict as exc:
            out.append(Variant(label, keep.n, None, f"cannot be removed alone: {exc}"))
            continue
        tree = (
            series.trees[-1]
            if series.trees
            else git("rev-parse", f"{result.start}^{{tree}}", cwd=ws.root).strip()
        )
        msg = f"overnight ablation: {study.name} without experiment {keep.n}\n"
        out.append(Variant(label, keep.n, commit_tree(ws, tree, result.start, msg)))
    return out


class Ablation:
    def __init__(self, study: Study, result: FinishResult, repeats: int, seed: int = 0) -> None:
        self.study, self.cfg, self.result = study, study.cfg, result
        self.repeats = repeats
        self.seed = seed
        self.dir = study.state_dir / "ablation"
        setup = prepare_runs(study, result.start)
        self.ws = study.ws
        # A worktree of its own, so ablation runs never share a slot (or its leftovers) with
        # the loop's; the same isolation and environment as the study's runs.
        executor = LocalExecutor(self.ws, setup.surface, setup.protected, 1,
                                 self.cfg.executor.gpus, sandbox=setup.sandbox)  # fmt: skip
        # Same marker prefix as the loop's: a killed ablation's orphans are reaped by the
        # next `overnight run` on start-up.
        self.marker = f"{setup.marker_prefix}:ablate"
        self.measurer = Measurer(self.cfg, executor, setup.surface, setup.base_env, seed,
                                 self.marker, study.exp_dir, slot=SLOT)  # fmt: skip

    def _run(self, v: Variant, repeat: int) -> None:
        assert v.commit is not None
        commands, metric_from = self.measurer.metric_commands()
        d = self.dir / v.label
        best = self.result.series.keeps[-1].n
        # The seed of repeat r matches the study's repeat r: paired across variants.
        run = self.measurer.execute(
            best, v.commit, repeat, "ablate", commands, metric_from, exp_dir=d,
            artifact_dir=d / f"artifacts-{repeat}", extra_env={
                "OVERNIGHT_ABLATION": v.label,
                "OVERNIGHT_TRACE_DIR": str(d / f"traces-{repeat}"),
            }, marker=f"{self.marker}:{v.label}:{repeat}", abort=False,
        )  # fmt: skip
        if run.status is not None:
            v.error = f"run {repeat + 1} failed: {run.error} (logs: {d})"
            return
        assert run.value is not None
        v.values.append(run.value)
        v.metrics = dict(run.metrics)

    def measure(self, progress: Callable[[str], None]) -> list[Variant]:
        variants = _variants(self.study, self.result)
        shutil.rmtree(self.dir, ignore_errors=True)
        runnable = [v for v in variants if v.commit is not None]
        total, done = len(runnable) * self.repeats, 0
        plural = "s" * (self.repeats != 1)
        budget = self.cfg.study.budget
        progress(
            f"ablation: {len(runnable)} variants × {self.repeats} repeat{plural} = {total} runs "
            f"(each up to {budget:g}s)"
        )
        try:
            for repeat in range(self.repeats):
                for v in runnable:
                    if v.error is not None:
                        continue
                    done += 1
                    self._run(v, repeat)
                    shown = v.error or f"{self.cfg.metric.name} {fmt(v.values[-1])}"
                    progress(f"[{done}/{total}] {v.label} repeat {repeat + 1}: {shown}")
                    if v.removed is None and v.error is not None:
                        raise OvernightError(
                            f"the final branch {self.result.branch} does not run: {v.error}; "
                            "there is nothing to compare the variants with"
                        )
        finally:
            self.ws.remove_worktree(SLOT)
        return variants

    def table(self, variants: list[Variant]) -> list[dict[str, Any]]:
        final = variants[0]
        m = self.cfg.metric
        final_mean = statistics.fmean(final.values)
        floor = max(m.threshold(final_mean), 1e-9 * max(1.0, abs(final_mean)))
        keeps = {k.n: k for k in self.result.series.keeps}
        rows = []
        for v in variants[1:]:
            assert v.removed is not None
            keep = keeps[v.removed]
            row: dict[str, Any] = {
                "experiment": keep.n, "description": keep.description, "contribution": None,
                "stderr": None, "ci95": None, "negligible": False, "effect": "unknown",
                "values": v.values, "final_values": final.values, "repeats": len(v.values),
                "error": v.error, "note": None,
            }  # fmt: skip
            if v.error is not None:
                # Unbuildable (later keeps need it) or broken without it: it matters.
                row["effect"] = "conflict" if v.commit is None else "essential"
                rows.append(row)
                continue
            # Pairs by repeat (same seed); positive = worse without the keep = it helps.
            diffs = [gain(f, w, m.goal) for f, w in zip(final.values, v.values, strict=True)]
            c = statistics.fmean(diffs)
            se = statistics.stdev(diffs) / math.sqrt(len(diffs)) if len(diffs) > 1 else None
            half = t_critical(len(diffs) - 1) * se if se is not None else 0.0
            negligible = abs(c) <= max(half, floor)
            effect = "negligible" if negligible else ("helps" if c > 0 else "hurts")
            ci95 = half if se is not None else None
            row.update(contribution=c, stderr=se, ci95=ci95, negligible=negligible, effect=effect)
            notes = [] if se is not None else ["one run each: no uncertainty estimate"]
            broken = check_constraints(v.metrics, self.cfg.constraints)
            if broken is not None:
                notes.append(f"without it: {broken.reason}")
            row["note"] = "; ".join(notes) or None
            rows.append(row)
        return rows


def write_table(study: Study, rows: list[dict[str, Any]]) -> Path:
    """`.overnight/<name>/ablation.json`, written atomically for the report to read."""
    path = study.state_dir / "ablation.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(rows, indent=2, allow_nan=False) + "\n")
    tmp.replace(path)
    return path


def run_ablation(
    study: Study, result: FinishResult, repeats: int, progress: Callable[[str], None]
) -> tuple[list[dict[str, Any]], list[float], Path]:
    """Measure, tabulate and write; returns the rows, the final branch's values and the file."""
    ablation = Ablation(study, result, repeats)
    variants = ablation.measure(progress)
    rows = ablation.table(variants)
    return rows, variants[0].values, write_table(study, rows)
