"""The executor interface: run one task (a candidate commit, one repeat) and report numbers.

Tasks and reports are plain data so they can cross process and Ray boundaries; an executor
never decides and never writes the ledger or the study branch."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field


@dataclass
class RunTask:
    experiment: int
    repeat: int
    kind: str  # "run" (the metric run), "confirm", "holdout", "check"
    commit: str
    # (label, command) in order; the metric is read from the output of `metric_from`.
    commands: list[tuple[str, str]]
    metric_from: str
    budget_s: float
    env: dict[str, str]
    exp_dir: str
    marker: str
    slot: int = 0


@dataclass
class RunReport:
    experiment: int
    repeat: int
    kind: str
    exit_code: int | None
    timed_out: bool
    interrupted: bool
    wall_s: float
    metrics: dict[str, float]
    output_tail: str
    failed_step: str | None = None  # label of the command that failed, if any
    locked_changed: list[str] = field(default_factory=list)
    isolation: str = "none"


class BaseExecutor(ABC):
    """Runs tasks; `slots` of them may run at once."""

    slots: int = 1

    @abstractmethod
    def run(self, task: RunTask) -> RunReport:
        """Run `task` to completion (or budget, or stop) and report; never raises for a
        failing command — that is a result, not an error."""

    def stop(self) -> None:  # noqa: B027 - optional hook
        """Interrupt whatever is running (Ctrl-C)."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release worktrees, clusters, threads."""
