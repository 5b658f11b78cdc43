"""Measuring a candidate: the one place that builds a run's task and environment, hands it
to an executor, and turns the executor's facts into a measurement — the metric parsed
from the right command's output, the integrity rule applied, the reason a run failed.

Everything that runs the experiment command goes through here: the loop's slots, the
baseline, drift re-measurements, `finish --ablate`, on every executor."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from overnight.config import Config
from overnight.executors.base import BaseExecutor, RunFacts, RunTask
from overnight.isolation.integrity import outside_surface
from overnight.judging.verdict import failure_status
from overnight.metrics import primary_value, read_metrics

if TYPE_CHECKING:
    from overnight.experiment.recorder import Recorder


class Interrupted(Exception):
    """A stop was requested while an experiment was in flight."""


@dataclass
class Run:
    """What one run measured."""

    facts: RunFacts
    metrics: dict[str, float]
    value: float | None  # the primary metric, None unless the run measured
    error: str | None  # why there is no usable value
    status: str | None  # the failure status it earns alone (rejected/timeout/crash), or None
    locked_changed: list[str] = field(default_factory=list)
    printed: float | None = None  # the primary metric as printed, even by a failed run
    id: int = 0  # its measurement id in the ledger, once recorded

    @property
    def wall_s(self) -> float:
        return self.facts.wall_s

    @property
    def exit_code(self) -> int | None:
        step = self.facts.failed_step
        return 0 if step is None else step.exit_code

    @property
    def timed_out(self) -> bool:
        step = self.facts.failed_step
        return bool(step and step.timed_out)

    @property
    def output_tail(self) -> str:
        step = self.facts.failed_step or (self.facts.steps[-1] if self.facts.steps else None)
        return step.output_tail if step else ""


def last_line(text: str) -> str:
    return next((ln.strip() for ln in reversed(text.splitlines()) if ln.strip()), "")


class Measurer:
    def __init__(
        self,
        cfg: Config,
        executor: BaseExecutor,
        surface: list[str],
        base_env: dict[str, str],
        seed: int,
        marker_prefix: str,
        exp_dir: Callable[[int], Path],
        recorder: Recorder | None = None,
        stop_reason: Callable[[], str] = lambda: "stopped",
        slot: int | str = 0,
    ) -> None:
        self.cfg = cfg
        self.executor = executor
        self.surface = surface
        self.base_env = base_env
        self.seed = seed
        self.marker_prefix = marker_prefix
        self.exp_dir = exp_dir
        self.recorder = recorder
        self.stop_reason = stop_reason
        self.slot = slot  # the executor slot (worktree, GPU) this measurer's runs use

    def for_slot(self, slot: int | str) -> Measurer:
        return Measurer(self.cfg, self.executor, self.surface, self.base_env, self.seed,
                        self.marker_prefix, self.exp_dir, self.recorder, self.stop_reason,
                        slot)  # fmt: skip

    # -- what a run is ----------------------------------------------------------------------

    def metric_commands(self) -> tuple[list[tuple[str, str]], str]:
        """The commands of one metric run, and which one's output holds the metric: with a
        trusted `[metric].command`, metric lines printed by the run itself are ignored."""
        commands = [("run", self.cfg.run.command)]
        if self.cfg.metric.command:
            commands.append(("metric", self.cfg.metric.command))
            return commands, "metric"
        return commands, "run"

    def run_env(self, n: int, repeat: int, traces: Path, artifacts: Path) -> dict[str, str]:
        """The environment of a run (DESIGN §4.4): the scrubbed base plus overnight's own."""
        return {
            **self.base_env,
            "OVERNIGHT_EXPERIMENT": str(n),
            "OVERNIGHT_BUDGET_S": f"{self.cfg.study.budget:g}",
            # Repeat r gets the same seed in every experiment: paired comparisons.
            "OVERNIGHT_SEED": str(self.seed + repeat),
            "OVERNIGHT_TRACE_DIR": str(traces),
            "OVERNIGHT_ARTIFACT_DIR": str(artifacts),
        }

    # -- one run ----------------------------------------------------------------------------

    def execute(
        self, n: int, commit: str, repeat: int, kind: str, commands: list[tuple[str, str]],
        metric_from: str, metric_name: str | None = None, *, exp_dir: Path | None = None,
        artifact_dir: Path | None = None, extra_env: dict[str, str] | None = None,
        marker: str | None = None, abort: bool = True,
    ) -> Run:  # fmt: skip
        """Run `commands` once on `commit` and measure; not recorded (see `measure`)."""
        folder = exp_dir or self.exp_dir(n)
        folder.mkdir(parents=True, exist_ok=True)
        suffix = ("" if kind == "run" else f"-{kind}") + ("" if repeat == 0 else f"-{repeat}")
        env = self.run_env(n, repeat, folder / f"traces{suffix}",
                           artifact_dir or folder / f"artifacts{suffix}")  # fmt: skip
        env.update(extra_env or {})
        task = RunTask(
            experiment=n, repeat=repeat, kind=kind, commit=commit, commands=commands,
            budget_s=self.cfg.study.budget, env=env, exp_dir=str(folder),
            marker=marker or f"{self.marker_prefix}:{n}:{kind}:{repeat}", slot=self.slot,
        )  # fmt: skip
        facts = self.executor.run(task)
        if facts.interrupted:
            if abort and self.recorder is not None:
                self.recorder.aborted(n, f"interrupted ({self.stop_reason()}); re-run on resume")
            raise Interrupted
        return self.measured(facts, metric_from, metric_name or self.cfg.metric.name)

    def measured(self, facts: RunFacts, metric_from: str, metric_name: str) -> Run:
        """The executor's facts judged once, the same way for every executor."""
        step = facts.step(metric_from)
        # A trusted command (`[metric]`, `[holdout]`) is read from its stdout alone: the
        # candidate it runs may share its stderr; the run alone may use either stream.
        logs = [Path(step.stdout)] if step else []
        if step and metric_from == "run":
            logs.append(Path(step.stderr))
        metrics = read_metrics(*logs)
        locked = outside_surface(facts.changed, self.surface)
        value, err = primary_value(metrics, metric_name)
        failed = facts.failed_step
        status = failure_status(
            bool(failed and failed.timed_out), 0 if failed is None else failed.exit_code,
            value is not None and failed is None, bool(locked),
        )  # fmt: skip
        error = None
        if locked:
            error = f"the run changed locked files: {', '.join(locked[:10])}"
        elif facts.lost:
            error = facts.lost
        elif failed is not None and failed.killed_because:
            error = f"{failed.label} command {failed.killed_because}"
        elif failed is not None and failed.timed_out:
            where = "" if failed.label == "run" else f" ({failed.label} command)"
            error = f"killed at the budget of {self.cfg.study.budget:g}s{where}"
        elif failed is not None:
            tail = last_line(failed.output_tail)[:200]
            error = f"{failed.label} command exited with code {failed.exit_code}" + (
                f": {tail}" if tail else "")  # fmt: skip
        elif value is None:
            error = err or "no metric"
        # A failed run has no result, whatever it printed before failing.
        return Run(facts, metrics, value if status is None else None, error, status, locked,
                   printed=value)

    # -- recorded measurements --------------------------------------------------------------

    def measure(
        self, n: int, commit: str, kind: str = "run", repeats: int | None = None,
        first_repeat: int = 0, abort: bool = True,
    ) -> list[Run]:  # fmt: skip
        """Run the candidate `repeats` times (the study's `repeats` by default), stopping at
        the first failed repeat; every repeat is recorded. `abort`: whether an interruption
        marks experiment `n` aborted (not for re-measuring a decided best)."""
        commands, metric_from = self.metric_commands()
        runs = []
        count = self.cfg.metric.repeats if repeats is None else repeats
        for repeat in range(first_repeat, first_repeat + count):
            run = self.execute(n, commit, repeat, kind, commands, metric_from, abort=abort)
            self._record(n, kind, repeat, run)
            runs.append(run)
            if run.status is not None:
                break
        return runs

    def measure_holdout(self, n: int, commit: str, abort: bool = True) -> Run:
        """Run `[holdout].command` once on candidate `n`, reading the artifacts of its first
        metric run; recorded as kind "holdout" (never shown to a proposer)."""
        h = self.cfg.holdout
        run = self.execute(n, commit, 0, "holdout", [("holdout", h.command)], "holdout",
                           h.name, artifact_dir=self.exp_dir(n) / "artifacts",
                           abort=abort)  # fmt: skip
        self._record(n, "holdout", 0, run)
        return run

    def _record(self, n: int, kind: str, repeat: int, run: Run) -> None:
        if self.recorder is not None:
            run.id = self.recorder.measurement(n, kind, repeat, run)


def aggregate(runs: list[Run]) -> tuple[float | None, dict[str, float], float]:
    """Mean value over repeats (None unless every repeat measured), the last repeat's
    secondary metrics, and the total wall time."""
    values = [r.value for r in runs if r.value is not None]
    value = sum(values) / len(values) if values and len(values) == len(runs) else None
    metrics = dict(runs[-1].metrics) if runs else {}
    return value, metrics, sum(r.wall_s for r in runs)
