"""Runs on this machine, one git worktree per slot."""

from __future__ import annotations

import contextlib
import threading
from pathlib import Path

from overnight.executors.base import BaseExecutor, RunReport, RunTask
from overnight.git.workspace import Workspace
from overnight.isolation.integrity import ProtectedFiles, outside_surface
from overnight.isolation.runner import run_command
from overnight.isolation.sandbox import Sandbox
from overnight.metrics import read_metrics


class LocalExecutor(BaseExecutor):
    def __init__(
        self,
        workspace: Workspace,
        surface: list[str],
        protected: ProtectedFiles,
        slots: int = 1,
        gpus: list[int] | None = None,
        sandbox: Sandbox | None = None,
    ) -> None:
        self.ws = workspace
        self.surface = surface
        self.protected = protected
        self.slots = slots
        self.gpus = gpus or []
        self._stop = threading.Event()
        self.sandbox = sandbox
        self._locked: list[str] | None = None

    def stop(self) -> None:
        self._stop.set()

    def run(self, task: RunTask) -> RunReport:
        wt = self.ws.prepare_worktree(task.slot, task.commit, self.protected.keep_patterns())
        self.protected.sync(wt)
        env = dict(task.env)
        if self.gpus:
            env["CUDA_VISIBLE_DEVICES"] = str(self.gpus[task.slot % len(self.gpus)])
        exp_dir = Path(task.exp_dir)
        for d in ("OVERNIGHT_TRACE_DIR", "OVERNIGHT_ARTIFACT_DIR"):
            if d in env:
                Path(env[d]).mkdir(parents=True, exist_ok=True)
        suffix = "" if task.repeat == 0 else f"-{task.repeat}"
        report = RunReport(
            experiment=task.experiment,
            repeat=task.repeat,
            kind=task.kind,
            exit_code=0,
            timed_out=False,
            interrupted=False,
            wall_s=0.0,
            metrics={},
            output_tail="",
        )
        for label, command in task.commands:
            prefix = "" if task.kind in ("run", label) else f"{task.kind}-"
            name = f"{prefix}{label}{suffix}"
            with self._wrap(task, wt, env, label) as wrap:
                out = run_command(
                    command,
                    cwd=wt,
                    env=env,
                    budget_s=task.budget_s,
                    stdout_path=exp_dir / f"{name}.stdout",
                    stderr_path=exp_dir / f"{name}.stderr",
                    marker=f"{task.marker}:{label}",
                    stop=self._stop,
                    wrap=wrap,
                )
            if label == task.commands[0][0]:
                report.wall_s = out.wall_s
            report.output_tail = out.output_tail
            if label == task.metric_from:
                report.metrics = read_metrics(out.stdout_path, out.stderr_path)
            if out.timed_out or out.interrupted or out.exit_code != 0:
                report.exit_code = out.exit_code
                report.timed_out = out.timed_out
                report.interrupted = out.interrupted
                report.failed_step = label
                break
        report.isolation = self.sandbox.describe() if self.sandbox else "none"
        changed = outside_surface(self.ws.changed_tracked(wt), self.surface)
        changed += self.protected.changed(wt)
        if changed:
            report.locked_changed = sorted(changed)
            self.protected.sync(wt)  # restore the originals right away
        return report

    def _wrap(
        self, task: RunTask, wt: Path, env: dict[str, str], label: str
    ) -> contextlib.AbstractContextManager[list[str]]:
        """The sandbox prefix of one command; the holdout command alone sees hidden paths."""
        if not self.sandbox:
            return contextlib.nullcontext([])
        if self._locked is None:
            # Tracked files are the same in every candidate: only surface contents change.
            tracked = outside_surface(self.ws.tracked_files(task.commit), self.surface)
            self._locked = sorted(set(tracked) | set(self.protected.files))
        writable = [Path(env[d]) for d in ("OVERNIGHT_TRACE_DIR", "OVERNIGHT_ARTIFACT_DIR")
                    if d in env]  # fmt: skip
        return self.sandbox.wrap(
            worktree=wt, writable=writable, locked=self._locked, trusted=label == "holdout"
        )
