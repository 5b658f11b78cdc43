"""A proposer for A/A studies: every proposal adds a comment line and changes nothing the
metric could see (tests/experiment/test_controls.py)."""

from __future__ import annotations

from overnight.proposers.base import BaseProposer, Context
from overnight.store.records import ExperimentRecord, Proposal


class CommentProposer(BaseProposer):
    name = "comment"

    def __init__(self, seed: int = 0, config: object = None) -> None:
        self.k = 0
        self.seen: set[int] = set()  # every experiment it was ever shown in a history
        self.observed: list[int] = []  # every experiment it was told the result of

    def observe(self, result: ExperimentRecord) -> None:
        self.observed.append(result.experiment)

    def propose(self, ctx: Context) -> Proposal:
        self.k += 1
        self.seen |= {r.experiment for r in ctx.history}
        (path, text), *_ = ctx.surface.items()
        return Proposal(files={path: text + f"# note {len(ctx.history)}-{self.k}\n"},
                        description=f"comment {self.k}")  # fmt: skip
