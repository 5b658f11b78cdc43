"""Plain data passed between the loop, the proposers, the judge and the ledger.

Everything here is picklable and free of live handles, so it can cross thread, process and
Ray boundaries.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

STATUSES = ("keep", "discard", "crash", "timeout", "invalid", "rejected", "suspect")


@dataclass
class Proposal:
    """An edit of the surface proposed by a proposer.

    `files` maps surface paths (relative to the repo root) to their complete new content.
    A proposer that could not produce a usable edit sets `invalid_reason` instead; one whose
    edit touched files outside the surface lists them in `outside_surface`.
    """

    files: dict[str, str]
    description: str
    rationale: str = ""
    hypothesis: str = ""
    invalid_reason: str | None = None
    outside_surface: list[str] = field(default_factory=list)
    prompt: str | None = None
    response: str | None = None
    cost_usd: float = 0.0
    usage: dict[str, Any] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)
    proposer: str = ""
    # The best commit the proposal was made against (set by the loop).
    base_commit: str = ""


@dataclass
class ExperimentRecord:
    """One experiment as stored in the ledger (the row `log --json` prints)."""

    experiment: int
    status: str | None
    value: float | None
    metrics: dict[str, float]
    commit: str | None
    parent: str | None
    description: str
    reason: str
    wall_s: float | None
    proposer: str
    rationale: str = ""
    hypothesis: str = ""
    state: str = "decided"
    cost_usd: float = 0.0
    created_at: float = 0.0
    decided_at: float | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    # A control: the unchanged best (this experiment) resubmitted blind; never kept.
    control_of: int | None = None

    def public(self) -> dict[str, Any]:
        """The JSON shape of `log --json` (DESIGN §4.2)."""
        return {
            "experiment": self.experiment,
            "status": self.status,
            "value": self.value,
            "metrics": self.metrics,
            "commit": self.commit,
            "parent": self.parent,
            "description": self.description,
            "reason": self.reason,
            "wall_s": self.wall_s,
            "proposer": self.proposer,
            "rationale": self.rationale,
            "cost_usd": self.cost_usd,
            "control_of": self.control_of,
        }
