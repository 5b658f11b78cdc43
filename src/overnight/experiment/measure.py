"""Measuring a candidate: build each run's task and environment, hand it to the executor,
store every repeat in the ledger, and turn failed runs into verdicts."""

from __future__ import annotations

from collections.abc import Callable

from overnight.config import Config
from overnight.executors.base import BaseExecutor, RunReport, RunTask
from overnight.judging.rules import Verdict
from overnight.metrics import primary_value
from overnight.store.ledger import Ledger
from overnight.store.study import Study


class Interrupted(Exception):
    """A stop was requested while an experiment was in flight."""


class Measurer:
    def __init__(
        self,
        study: Study,
        executor: BaseExecutor,
        ledger: Ledger,
        base_env: dict[str, str],
        seed: int,
        marker_prefix: str,
        stop_reason: Callable[[], str],
        slot: int = 0,
    ) -> None:
        self.slot = slot  # the executor slot (worktree, GPU) this measurer's runs use
        self.study = study
        self.cfg: Config = study.cfg
        self.executor = executor
        self.ledger = ledger
        self.base_env = base_env
        self.seed = seed
        self.marker_prefix = marker_prefix
        self.stop_reason = stop_reason

    def metric_commands(self) -> tuple[list[tuple[str, str]], str]:
        """The commands of one metric run, and which one's output holds the metric: with a
        trusted `[metric].command`, metric lines printed by the run itself are ignored."""
        commands = [("run", self.cfg.run.command)]
        if self.cfg.metric.command:
            commands.append(("metric", self.cfg.metric.command))
            return commands, "metric"
        return commands, "run"

    def measure(
        self, n: int, commit: str, kind: str = "run", repeats: int | None = None,
        first_repeat: int = 0, abort: bool = True,
    ) -> list[RunReport]:  # fmt: skip
        """Run the candidate `repeats` times (the study's `repeats` by default), stopping at
        the first failed repeat; every repeat is stored in the ledger. `abort`: whether an
        interruption marks experiment `n` aborted (not for re-measuring a decided best)."""
        commands, metric_from = self.metric_commands()
        reports = []
        count = self.cfg.metric.repeats if repeats is None else repeats
        for repeat in range(first_repeat, first_repeat + count):
            report = self.execute(n, commit, repeat, kind, commands, metric_from, abort=abort)
            reports.append(report)
            value, err = primary_value(report.metrics, self.cfg.metric.name)
            self.ledger.add_measurement(
                n, kind, repeat, value, report.metrics, report.exit_code, report.timed_out,
                report.wall_s, err if report.exit_code == 0 else report.failed_step,
            )  # fmt: skip
            if report.exit_code != 0 or report.timed_out or report.locked_changed or err:
                break
        return reports

    def measure_holdout(self, n: int, commit: str, abort: bool = True) -> RunReport:
        """Run `[holdout].command` once on candidate `n`, reading the artifacts of its first
        metric run; stored as a measurement of kind "holdout" (never shown to a proposer)."""
        h = self.cfg.holdout
        artifacts = str(self.study.exp_dir(n) / "artifacts")
        report = self.execute(n, commit, 0, "holdout", [("holdout", h.command)], "holdout",
                              artifact_dir=artifacts, abort=abort)  # fmt: skip
        value, err = primary_value(report.metrics, h.name)
        self.ledger.add_measurement(
            n, "holdout", 0, value, report.metrics, report.exit_code, report.timed_out,
            report.wall_s, err if report.exit_code == 0 else report.failed_step,
        )  # fmt: skip
        return report

    def execute(
        self, n: int, commit: str, repeat: int, kind: str, commands: list[tuple[str, str]],
        metric_from: str, artifact_dir: str | None = None, abort: bool = True,
    ) -> RunReport:  # fmt: skip
        exp_dir = self.study.exp_dir(n)
        exp_dir.mkdir(parents=True, exist_ok=True)
        suffix = ("" if kind == "run" else f"-{kind}") + ("" if repeat == 0 else f"-{repeat}")
        env = {
            **self.base_env,
            "OVERNIGHT_EXPERIMENT": str(n),
            "OVERNIGHT_BUDGET_S": f"{self.cfg.study.budget:g}",
            # Repeat r gets the same seed in every experiment: paired comparisons.
            "OVERNIGHT_SEED": str(self.seed + repeat),
            "OVERNIGHT_TRACE_DIR": str(exp_dir / f"traces{suffix}"),
            "OVERNIGHT_ARTIFACT_DIR": artifact_dir or str(exp_dir / f"artifacts{suffix}"),
        }
        task = RunTask(
            experiment=n, repeat=repeat, kind=kind, commit=commit, commands=commands,
            metric_from=metric_from, budget_s=self.cfg.study.budget, env=env,
            exp_dir=str(exp_dir), marker=f"{self.marker_prefix}:{n}:{kind}:{repeat}",
            slot=self.slot,
        )  # fmt: skip
        report = self.executor.run(task)
        if report.interrupted:
            if abort:
                self.ledger.set_state(
                    n, "aborted", reason=f"interrupted ({self.stop_reason()}); re-run on resume"
                )
            raise Interrupted
        return report

    def failure(self, reports: list[RunReport]) -> Verdict | None:
        """The verdict of the first failed repeat, or None when every repeat measured."""
        budget = self.cfg.study.budget
        for r in reports:
            if r.locked_changed:
                changed = ", ".join(r.locked_changed[:10])
                return Verdict("rejected", f"the run changed locked files: {changed}")
            if r.timed_out:
                step = "" if r.failed_step == "run" else f" ({r.failed_step} command)"
                return Verdict("timeout", f"killed at the budget of {budget:g}s{step}")
            if r.exit_code != 0:
                last = next((ln for ln in reversed(r.output_tail.splitlines()) if ln.strip()), "")
                if r.exit_code is None:  # never finished: the executor lost it (say, a dead node)
                    return Verdict("crash", last.strip()[:300] or f"{r.failed_step} was lost")
                detail = f": {last.strip()[:200]}" if last else ""
                return Verdict(
                    "crash", f"{r.failed_step} command exited with code {r.exit_code}{detail}"
                )
            value, err = primary_value(r.metrics, self.cfg.metric.name)
            if value is None:
                return Verdict("crash", err or "no metric")
        return None

    def values(self, reports: list[RunReport]) -> list[float]:
        out = []
        for r in reports:
            value, _ = primary_value(r.metrics, self.cfg.metric.name)
            if value is not None:
                out.append(value)
        return out

    def aggregate(self, reports: list[RunReport]) -> tuple[float | None, dict[str, float], float]:
        """Mean value over repeats (None unless every repeat measured), the last repeat's
        secondary metrics, and the total wall time."""
        values = self.values(reports)
        value = sum(values) / len(values) if values and len(values) == len(reports) else None
        metrics = dict(reports[-1].metrics) if reports else {}
        return value, metrics, sum(r.wall_s for r in reports)
