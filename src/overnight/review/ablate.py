"""`overnight finish --ablate`: how much each keep matters, measured by leaving it out.

A greedy search keeps whatever measured better once, so after a night some keeps are luck
(noise that happened to favour them) or were overtaken by later ones. Ablation re-measures
the final branch and every leave-one-out variant with repeats, interleaved round by round
and with the same seed per round (so slow drift of the machine hits every variant alike and
the comparison is paired), and reports each keep's contribution with its uncertainty.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import statistics
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from overnight.config import resolve_surface
from overnight.errors import OvernightError, UsageError
from overnight.executors.base import RunReport, RunTask
from overnight.executors.local import LocalExecutor
from overnight.git.workspace import Workspace, git
from overnight.isolation.integrity import ProtectedFiles
from overnight.isolation.runner import scrub_env
from overnight.isolation.sandbox import Sandbox
from overnight.judging.constraints import check_constraints
from overnight.judging.rules import fmt, gain
from overnight.metrics import primary_value
from overnight.review.finish import FinishResult, ReplayConflict, commit_tree, replay
from overnight.store.lock import study_lock
from overnight.store.study import Study

DEFAULT_REPEATS = 3
# Two-sided 95% critical values of Student's t by degrees of freedom: with 3 repeats the
# standard error itself is so uncertain that 2·SE would call noise a contribution.
_T975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306,
         9: 2.262, 10: 2.228, 12: 2.179, 15: 2.131, 20: 2.086, 30: 2.042, 60: 2.000}  # fmt: skip


def t_critical(df: int) -> float:
    usable = [d for d in _T975 if d <= df]
    return _T975[max(usable)] if usable else _T975[1]


class _AblationWorkspace(Workspace):
    """The study's workspace with a worktree of its own, so ablation runs never share a
    slot (or its untracked leftovers) with the loop's."""

    def worktree_path(self, slot: int) -> Path:
        return self.worktrees_dir / f"{self.study}-ablate"


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


def _failure(report: RunReport, metric: str, budget: float) -> str | None:
    if report.locked_changed:
        return f"the run changed locked files: {', '.join(report.locked_changed[:5])}"
    if report.interrupted:
        return "interrupted"
    if report.timed_out:
        return f"killed at the budget of {budget:g}s"
    if report.exit_code != 0:
        return f"{report.failed_step} command exited with code {report.exit_code}"
    return primary_value(report.metrics, metric)[1]


class Ablation:
    def __init__(self, study: Study, result: FinishResult, repeats: int, seed: int = 0) -> None:
        from overnight.experiment.loop import (
            DEFAULT_KEY_ENV,  # the loop's own rule for the key to drop
        )

        self.study, self.cfg, self.result = study, study.cfg, result
        self.repeats = repeats
        self.seed = seed
        self.dir = study.state_dir / "ablation"
        ws = _AblationWorkspace(study.root, study.name)
        tracked = ws.tracked_files(result.start)
        surface = resolve_surface(self.cfg.study.surface, tracked, self.cfg.path.name,
                                  root=study.root)  # fmt: skip
        protected = ProtectedFiles(study.root, self.cfg.study.protect, tracked)
        # The same isolation as the study's runs: numbers measured under other conditions
        # would not be comparable, and `network = false` is a promise, not a preference.
        sandbox = Sandbox(self.cfg.sandbox, study.root, dict(os.environ))
        sandbox.check()
        self.ws = ws
        self.executor = LocalExecutor(
            ws, surface, protected, 1, self.cfg.executor.gpus, sandbox=sandbox
        )
        prov = self.cfg.proposer
        key_env = prov.api_key_env or DEFAULT_KEY_ENV.get(prov.provider, "")
        self.base_env = scrub_env(os.environ, self.cfg.run.pass_env,
                                  drop=[key_env] if key_env else [])  # fmt: skip
        # Same marker prefix as the loop's: a killed ablation's orphans are reaped by the
        # next `overnight run` on start-up.
        digest = hashlib.sha1(str(study.root).encode()).hexdigest()[:10]
        self.marker = f"overnight:{digest}:{study.name}:ablate"

    def _commands(self) -> tuple[list[tuple[str, str]], str]:
        commands = [("run", self.cfg.run.command)]
        if self.cfg.metric.command:
            return [*commands, ("metric", self.cfg.metric.command)], "metric"
        return commands, "run"

    def _run(self, v: Variant, repeat: int) -> None:
        assert v.commit is not None
        commands, metric_from = self._commands()
        d = self.dir / v.label
        best = self.result.series.keeps[-1].n
        env = {
            **self.base_env,
            "OVERNIGHT_EXPERIMENT": str(best),
            "OVERNIGHT_ABLATION": v.label,
            "OVERNIGHT_BUDGET_S": f"{self.cfg.study.budget:g}",
            # The seed of repeat r matches the study's repeat r: paired across variants.
            "OVERNIGHT_SEED": str(self.seed + repeat),
            "OVERNIGHT_TRACE_DIR": str(d / f"traces-{repeat}"),
            "OVERNIGHT_ARTIFACT_DIR": str(d / f"artifacts-{repeat}"),
        }
        task = RunTask(
            experiment=best, repeat=repeat, kind="ablate", commit=v.commit, commands=commands,
            metric_from=metric_from, budget_s=self.cfg.study.budget, env=env, exp_dir=str(d),
            marker=f"{self.marker}:{v.label}:{repeat}",
        )  # fmt: skip
        report = self.executor.run(task)
        why = _failure(report, self.cfg.metric.name, self.cfg.study.budget)
        if why is not None:
            v.error = f"run {repeat + 1} failed: {why} (logs: {d})"
            return
        v.values.append(report.metrics[self.cfg.metric.name])
        v.metrics = dict(report.metrics)

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
            git("worktree", "remove", "--force", str(self.ws.worktree_path(0)),
                cwd=self.study.root, check=False)  # fmt: skip
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
