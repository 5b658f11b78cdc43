"""The proposer interface."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any

from overnight.store.records import ExperimentRecord, Proposal


@dataclass
class Context:
    """What a proposer knows when it proposes. Built from the ledger, never from memory,
    so a restarted controller proposes as well as one that never stopped."""

    study: str
    instructions: str
    surface: dict[str, str]  # path -> content of the current best
    metric: str
    goal: str  # "minimize" | "maximize"
    budget_s: float
    best_experiment: int
    best_value: float | None
    baseline_value: float | None
    history: list[ExperimentRecord]  # every decided experiment, oldest first
    seed: int = 0
    best_commit: str = ""
    repo_root: str = ""
    lessons: list[str] = field(default_factory=list)
    trace_digest: str = ""
    last_crash_log: str = ""
    constraints: list[dict[str, Any]] = field(default_factory=list)
    best_metrics: dict[str, float] = field(default_factory=dict)
    # Experiments being measured now ({"experiment": n, "description": ...}, oldest first),
    # then proposals made ahead that wait for a slot ("experiment": None): with run-ahead
    # and parallel slots, any of them may become the best before this proposal runs, and
    # proposing one of them again wastes an experiment.
    in_flight: list[dict[str, Any]] = field(default_factory=list)


class BaseProposer(ABC):
    """Invents proposals. Never runs experiments and never touches git: the loop does."""

    name: str = "base"
    # True when propose() may run in several threads at once (e.g. calls to a model API),
    # so that parallel slots are not held back by one model call at a time.
    concurrent: bool = False

    @abstractmethod
    def propose(self, ctx: Context) -> Proposal:
        """Return the next proposal for the surface in `ctx`."""

    def observe(self, result: ExperimentRecord) -> None:  # noqa: B027 - optional hook
        """Learn from a decided experiment (its proposal came from this proposer or another)."""

    def rebase(self, proposal: Proposal, surface: dict[str, str]) -> dict[str, str] | None:
        """Re-apply `proposal`'s change onto `surface`, a newer best than the one it was made
        for (run-ahead and parallel slots make that common). Return the new file contents,
        or None to let the loop fall back to a three-way merge of the text."""
        return None

    def describe(self) -> str:
        """One line for the user: which proposer this is and how it is set up."""
        return self.name

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release resources (HTTP clients, subprocesses)."""
