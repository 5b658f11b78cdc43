"""The executor interface: run one task (a candidate commit, one repeat) and report facts.

An executor runs commands and says what happened: exit status, wall time, where the logs
are, which files of the candidate differ after the run. It never parses metrics, never
applies the integrity rules and never decides; the measurer does that once, above every
executor (experiment/measure.py). Tasks and facts are plain data so they can cross process
and Ray boundaries.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field


@dataclass
class RunTask:
    experiment: int
    repeat: int
    kind: str  # "run" (the metric run), "confirm", "remeasure", "holdout", "check", "ablate"
    commit: str
    commands: list[tuple[str, str]]  # (label, command) in order
    budget_s: float
    env: dict[str, str]
    exp_dir: str
    marker: str
    slot: int | str = 0

    def log_name(self, label: str) -> str:
        """The file stem of a command's logs in the experiment folder, the same on every
        executor: `run`, `metric-2`, `confirm-run-3`, `holdout`…"""
        prefix = "" if self.kind in ("run", label) else f"{self.kind}-"
        suffix = "" if self.repeat == 0 else f"-{self.repeat}"
        return f"{prefix}{label}{suffix}"


@dataclass
class StepFacts:
    """What one command of a task did."""

    label: str
    exit_code: int | None  # None: killed (budget, stop) or lost
    timed_out: bool
    interrupted: bool
    wall_s: float
    stdout: str  # paths of its logs in the experiment folder
    stderr: str
    output_tail: str = ""  # head and tail of stdout then stderr, bounded
    killed_because: str = ""  # the runner killed it for a reason other than the budget
    notes: list[str] = field(default_factory=list)  # caps applied to its logs, named

    @property
    def failed(self) -> bool:
        return self.timed_out or self.interrupted or self.exit_code != 0


@dataclass
class RunFacts:
    experiment: int
    repeat: int
    kind: str
    steps: list[StepFacts] = field(default_factory=list)  # stops at the first that failed
    changed: list[str] = field(default_factory=list)  # candidate files differing afterwards
    isolation: str = "none"
    lost: str = ""  # the executor lost the run (a dead node): why; exit status unknown

    @property
    def failed_step(self) -> StepFacts | None:
        if self.lost:
            return self.steps[-1] if self.steps else None
        return next((s for s in self.steps if s.failed), None)

    @property
    def interrupted(self) -> bool:
        return any(s.interrupted for s in self.steps)

    @property
    def wall_s(self) -> float:
        """The experiment command's wall time (what a budget is about)."""
        return self.steps[0].wall_s if self.steps else 0.0

    def step(self, label: str) -> StepFacts | None:
        return next((s for s in self.steps if s.label == label), None)


class BaseExecutor(ABC):
    """Runs tasks; `slots` of them may run at once."""

    slots: int = 1

    @abstractmethod
    def run(self, task: RunTask) -> RunFacts:
        """Run `task` to completion (or budget, or stop) and report; never raises for a
        failing command — that is a result, not an error."""

    def stop(self) -> None:  # noqa: B027 - optional hook
        """Interrupt whatever is running (Ctrl-C)."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release worktrees, clusters, threads."""
