"""An executor that starts no process: for in-process tests of the pipeline and scheduler,
the way httpx ships a mock transport.

    def behave(task, files):          # files: the candidate's surface, path -> text
        x = float(files["train.py"].split("X = ")[1].split()[0])
        return FakeRun(stdout=f"loss: {x}\\n")

    FakeExecutor(workspace, ["train.py"], behave, slots=2)

Logs are written where a real executor writes them, so everything above an executor
(metric parsing, integrity rules, verdicts, `overnight show`) works unchanged.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from overnight.executors.base import BaseExecutor, RunFacts, RunTask, StepFacts
from overnight.git.workspace import Workspace


@dataclass
class FakeRun:
    """What one command "did"."""

    stdout: str = ""
    stderr: str = ""
    exit_code: int = 0
    timed_out: bool = False
    wall_s: float = 0.01
    changed: list[str] = field(default_factory=list)  # files it "modified"


Behaviour = Callable[[RunTask, dict[str, str]], FakeRun]


class FakeExecutor(BaseExecutor):
    def __init__(
        self,
        workspace: Workspace,
        surface: list[str],
        behave: Behaviour,
        slots: int = 1,
        per_command: Callable[[RunTask, str, dict[str, str]], FakeRun] | None = None,
    ) -> None:
        self.ws = workspace
        self.surface = surface
        self.behave = behave
        self.per_command = per_command
        self.slots = slots
        self.tasks: list[RunTask] = []  # every task it was given, in order
        self._lock = threading.Lock()
        self._stop = threading.Event()

    def stop(self) -> None:
        self._stop.set()

    def run(self, task: RunTask) -> RunFacts:
        with self._lock:
            self.tasks.append(task)
        files = self.ws.read_files(task.commit, self.surface)
        exp_dir = Path(task.exp_dir)
        exp_dir.mkdir(parents=True, exist_ok=True)
        facts = RunFacts(task.experiment, task.repeat, task.kind, isolation="fake")
        for i, (label, _command) in enumerate(task.commands):
            if self._stop.is_set():
                out = FakeRun(exit_code=-2)
                interrupted = True
            else:
                interrupted = False
                if i == 0 or self.per_command is None:
                    out = self.behave(task, files) if i == 0 else FakeRun()
                else:
                    out = self.per_command(task, label, files)
            name = task.log_name(label)
            stdout, stderr = exp_dir / f"{name}.stdout", exp_dir / f"{name}.stderr"
            stdout.write_text(out.stdout)
            stderr.write_text(out.stderr)
            step = StepFacts(
                label=label, exit_code=None if out.timed_out or interrupted else out.exit_code,
                timed_out=out.timed_out, interrupted=interrupted, wall_s=out.wall_s,
                stdout=str(stdout), stderr=str(stderr),
                output_tail=out.stdout + (f"\n[stderr]\n{out.stderr}" if out.stderr else ""),
            )  # fmt: skip
            facts.steps.append(step)
            facts.changed += out.changed
            if step.failed:
                break
        return facts
