"""The proposer interface."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any

from overnight.store.records import ExperimentRecord, Proposal

# Proposal meta key: the proposer can produce nothing at all for this study (see
# `nothing_to_propose`); the night stops at once instead of recording the same failure.
NOTHING_TO_PROPOSE = "nothing_to_propose"


def nothing_to_propose(proposer: str, description: str, reason: str) -> Proposal:
    """The proposal of a proposer that can produce nothing at all for this study, whatever
    happens next (`tune` on a surface without knobs). `reason` says what the user can do."""
    return Proposal(files={}, description=description, invalid_reason=reason, proposer=proposer,
                    meta={NOTHING_TO_PROPOSE: True})  # fmt: skip


@dataclass
class Remaining:
    """What is left of this night's limits when the proposal is asked for (None: no limit):
    `--hours`, `--experiments` and `--max-cost` of the `overnight run` going on."""

    seconds: float | None = None
    experiments: int | None = None
    usd: float | None = None

    def describe(self) -> str:
        """One line for a prompt, e.g. "left: 2.5 h, 40 experiments, $1.20"; "" when unlimited."""
        parts = []
        if self.seconds is not None:
            s = max(0.0, self.seconds)
            parts.append(f"{s / 3600:.1f} h" if s >= 3600 else f"{s / 60:.0f} min")
        if self.experiments is not None:
            parts.append(f"{max(0, self.experiments)} experiment(s)")
        if self.usd is not None:
            parts.append(f"${max(0.0, self.usd):.2f} of model spend")
        return "left in this run: " + ", ".join(parts) if parts else ""


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
    remaining: Remaining = field(default_factory=Remaining)  # time, experiments, money left


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
