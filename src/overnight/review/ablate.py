"""`overnight finish --ablate`: how much each keep matters, measured by leaving it out.

A greedy search keeps whatever measured better once, so after a night some keeps are luck
(noise that happened to favour them) or were overtaken by later ones. Ablation re-measures
the final branch and every leave-one-out variant with repeats, interleaved round by round
and with the same seed per round (so slow drift of the machine hits every variant alike and
the comparison is paired), and reports each keep's contribution with its uncertainty.

A leave-one-out variant is the final series without one keep: the other keeps carried onto
the start commit with `git.transfer.carry`, the mechanism of `finish --drop` and of the
loop's re-basing. A later keep that changed the same text as the removed one does not
carry without it: it truly depends on it, is left out with it, and the row says so (the
contribution is then that of the keep and what builds on it). A variant whose tree is the
final one (later keeps re-set everything it changed) contributes exactly nothing and costs
no runs. Keeps indistinguishable from zero are hitchhikers; the keeps that matter (and what
they build on) are measured together once more, when that set is not a variant already,
to see whether they alone reach the final value.
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
from overnight.judging.constraints import check_constraints
from overnight.judging.rules import fmt, gain
from overnight.review.changes import Changes
from overnight.review.finish import FinishResult, Keep, commit_tree, replay
from overnight.store.lock import study_lock
from overnight.store.study import Study

DEFAULT_REPEATS = 3
# Up to this many keeps, the smallest set is first reduced by trying each keep's removal
# (a replay of the series, merges only, no runs): quadratic in the keeps.
MAX_REDUCE = 60
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
    label: str  # "final", "without-<n>" or "smallest-set"
    removed: int | None
    commit: str | None
    error: str | None = None  # why it failed to run
    values: list[float] = field(default_factory=list)
    metrics: dict[str, float] = field(default_factory=dict)
    tree: str = ""
    dependents: list[int] = field(default_factory=list)  # later keeps left out with it
    why: str = ""  # the conflicts that made them depend on it
    same_as: Variant | None = None  # the same tree as a variant measured already

    def share(self) -> None:
        """Take the runs of the identical variant measured for it."""
        if self.same_as is not None:
            self.values, self.metrics = self.same_as.values, self.same_as.metrics
            self.error = self.same_as.error


def _variant(changes: Changes, result: FinishResult, label: str, keeps: list[Keep],
             known: dict[str, Variant]) -> Variant:  # fmt: skip
    """`keeps` carried onto the start, leaving out those that build on the missing ones."""
    ws = changes.ws
    series = replay(changes, result.start, keeps, leave_out=True)
    tree = series.tree
    v = Variant(label, None, None, tree=tree, dependents=sorted(series.left_out))
    v.why = "; ".join(f"experiment {n}: {d.reason()}" for n, d in sorted(series.left_out.items()))
    v.same_as = known.get(tree)
    if v.same_as is None:
        msg = f"overnight ablation: {changes.study.name} {label}\n"
        v.commit = commit_tree(ws, tree, result.start, msg)
        known[tree] = v
    return v


def _variants(changes: Changes, result: FinishResult) -> list[Variant]:
    keeps = result.series.keeps
    final = Variant("final", None, result.head, tree=changes.ws.tree_id(result.head))
    out, known = [final], {final.tree: final}
    for keep in keeps:
        others = [k for k in keeps if k.n != keep.n]
        v = _variant(changes, result, f"without-{keep.n}", others, known)
        v.removed = keep.n
        out.append(v)
    return out


class Ablation:
    def __init__(self, study: Study, result: FinishResult, repeats: int, seed: int = 0) -> None:
        self.study, self.cfg, self.result = study, study.cfg, result
        self.repeats = repeats
        self.seed = seed
        self.dir = study.state_dir / "ablation"
        self.changes = Changes(study, result.start)
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

    def measure(self, variants: list[Variant], progress: Callable[[str], None],
                what: str = "ablation") -> None:  # fmt: skip
        """Every variant not measured yet, `repeats` runs each, round by round."""
        runnable = [v for v in variants if v.commit is not None and v.same_as is None]
        total, done = len(runnable) * self.repeats, 0
        plural = "s" * (self.repeats != 1)
        if runnable:
            progress(f"{what}: {len(runnable)} variant{'s' * (len(runnable) != 1)} × "
                     f"{self.repeats} repeat{plural} = {total} runs (each up to "
                     f"{self.cfg.study.budget:g}s)")  # fmt: skip
        for repeat in range(self.repeats):
            for v in runnable:
                if v.error is not None:
                    continue
                done += 1
                self._run(v, repeat)
                shown = v.error or f"{self.cfg.metric.name} {fmt(v.values[-1])}"
                progress(f"[{done}/{total}] {v.label} repeat {repeat + 1}: {shown}")
                if v.label == "final" and v.error is not None:
                    raise OvernightError(
                        f"the final branch {self.result.branch} does not run: {v.error}; "
                        "there is nothing to compare the variants with"
                    )
        for v in variants:
            v.share()

    def _paired(self, final: Variant, v: Variant, floor: float) -> dict[str, Any]:
        """Contribution (final vs `v`, paired by repeat; positive: `v` is worse), its
        standard error, the 95% half-width and whether it is indistinguishable from zero."""
        diffs = [gain(f, w, self.cfg.metric.goal)
                 for f, w in zip(final.values, v.values, strict=True)]  # fmt: skip
        c = statistics.fmean(diffs)
        se = statistics.stdev(diffs) / math.sqrt(len(diffs)) if len(diffs) > 1 else None
        half = t_critical(len(diffs) - 1) * se if se is not None else 0.0
        return {"contribution": c, "stderr": se, "ci95": half if se is not None else None,
                "negligible": abs(c) <= max(half, floor)}  # fmt: skip

    def _floor(self, final: Variant) -> float:
        final_mean = statistics.fmean(final.values)
        return max(self.cfg.metric.threshold(final_mean), 1e-9 * max(1.0, abs(final_mean)))

    def table(self, variants: list[Variant]) -> list[dict[str, Any]]:
        final = variants[0]
        floor = self._floor(final)
        keeps = {k.n: k for k in self.result.series.keeps}
        rows = []
        for v in variants[1:]:
            assert v.removed is not None
            keep = keeps[v.removed]
            row: dict[str, Any] = {
                "experiment": keep.n, "description": keep.description, "contribution": None,
                "stderr": None, "ci95": None, "negligible": False, "hitchhiker": False,
                "effect": "unknown", "values": v.values, "final_values": final.values,
                "repeats": len(v.values), "error": v.error, "note": None,
                "dependents": v.dependents, "in_smallest_set": None,
            }  # fmt: skip
            notes = []
            if v.dependents:
                notes.append(f"removed together with experiment(s) "
                             f"{', '.join(map(str, v.dependents))}, which build on it "
                             f"({v.why})")  # fmt: skip
            if v.same_as is final:
                notes.append("superseded: later keeps re-set everything it changed, so none "
                             "of it is in the final code")  # fmt: skip
            if v.error is not None:
                row["effect"] = "essential"  # broken without it: it matters
                row["note"] = "; ".join(notes) or None
                rows.append(row)
                continue
            row.update(self._paired(final, v, floor))
            row["hitchhiker"] = row["negligible"]
            c = row["contribution"]
            row["effect"] = "negligible" if row["negligible"] else ("helps" if c > 0 else "hurts")
            if row["stderr"] is None:
                notes.append("one run each: no uncertainty estimate")
            broken = check_constraints(v.metrics, self.cfg.constraints)
            if broken is not None:
                notes.append(f"without it: {broken.reason}")
            row["note"] = "; ".join(notes) or None
            rows.append(row)
        return rows

    def smallest_set(
        self, variants: list[Variant], rows: list[dict[str, Any]], progress: Callable[[str], None]
    ) -> dict[str, Any]:
        """A minimal set of keeps that reaches the final value. First, free of runs: keeps
        whose removal leaves the final code byte for byte (later keeps re-set what they
        changed) are dropped one at a time, oldest first. Then the hitchhikers among the
        rest are left out too (keeping what the others build on), and that set is measured
        once; when it falls short of the final value beyond the interval, the first set
        stands."""
        keeps, final = self.result.series.keeps, variants[0]
        changes = self.changes
        same = list(keeps)
        if len(keeps) <= MAX_REDUCE:
            for keep in keeps:
                trial = [k for k in same if k is not keep]
                series = replay(changes, self.result.start, trial, leave_out=True)
                if not series.left_out and series.tree == final.tree:
                    same = trial
        found: dict[str, Any] = {"experiments": [k.n for k in same], "same_code": True,
                                 "values": final.values, "shortfall": 0.0, "ci95": 0.0,
                                 "runs": 0}  # fmt: skip
        hitchhikers = {r["experiment"] for r in rows if r["hitchhiker"]}
        builds_on = {v.removed: set(v.dependents) for v in variants[1:]}
        needed = {k.n for k in same} - hitchhikers
        grew = True
        while grew:  # a keep that stays needs the keeps it builds on
            more = {k for k, deps in builds_on.items() if deps & needed} - needed
            grew, needed = bool(more), needed | more
        fewer = [k for k in same if k.n in needed]
        if len(fewer) < len(same):
            known = {v.tree: v for v in variants if v.same_as is None}
            v = _variant(changes, self.result, "smallest-set", fewer, known)
            if not v.dependents:
                self.measure([v], progress, "smallest set")
            if not v.dependents and v.error is None and len(v.values) == len(final.values):
                paired = self._paired(final, v, self._floor(final))
                if paired["contribution"] <= max(paired["ci95"] or 0.0, self._floor(final)):
                    found = {"experiments": [k.n for k in fewer], "same_code": v.same_as is final,
                             "values": v.values, "shortfall": paired["contribution"],
                             "ci95": paired["ci95"],
                             "runs": 0 if v.same_as is not None else len(v.values)}  # fmt: skip
        for row in rows:
            row["in_smallest_set"] = row["experiment"] in found["experiments"]
        return found


def write_table(study: Study, rows: list[dict[str, Any]]) -> Path:
    """`.overnight/<name>/ablation.json`, written atomically for the report to read."""
    path = study.state_dir / "ablation.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(rows, indent=2, allow_nan=False) + "\n")
    tmp.replace(path)
    return path


@dataclass
class AblationResult:
    rows: list[dict[str, Any]]
    final_values: list[float]
    path: Path
    smallest: dict[str, Any]  # see Ablation.smallest_set


def run_ablation(
    study: Study, result: FinishResult, repeats: int, progress: Callable[[str], None]
) -> AblationResult:
    """Build, measure, tabulate and write."""
    ablation = Ablation(study, result, repeats)
    variants = _variants(ablation.changes, result)
    shutil.rmtree(ablation.dir, ignore_errors=True)
    try:
        ablation.measure(variants, progress)
        rows = ablation.table(variants)
        smallest = ablation.smallest_set(variants, rows, progress)
    finally:
        ablation.ws.remove_worktree(SLOT)
    return AblationResult(rows, variants[0].values, write_table(study, rows), smallest)
