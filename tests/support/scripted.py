"""A proposer for tests: replays a JSON script of proposals.

The script (path in $OVERNIGHT_TEST_SCRIPT) is a list of objects with `files` (path ->
content; `{BEST}` stands for the best's content) or `edit` (path -> [old, new]: the best's
content with `old` replaced once), `description`, and optionally `invalid_reason` /
`outside_surface`, and `signal`: a file written once the step has been proposed (a
rendezvous for a run that must not end before then). Proposal k is
the k-th non-baseline experiment, counted from the ledger history, so a restarted controller
continues the script where the ledger says it is (pending proposals excluded)."""

from __future__ import annotations

import json
import os
from pathlib import Path

from overnight.proposers.base import BaseProposer, Context
from overnight.store.records import Proposal


class ScriptedProposer(BaseProposer):
    name = "scripted"

    def __init__(self, seed: int = 0, config: object = None) -> None:
        self.script = json.loads(Path(os.environ["OVERNIGHT_TEST_SCRIPT"]).read_text())
        self.k: int | None = None

    def propose(self, ctx: Context) -> Proposal:
        # Counted from the ledger on the first call (resume), then by calls: with run-ahead
        # the next proposal is asked for before the previous one is decided.
        self.k = len(ctx.history) - 1 if self.k is None else self.k + 1
        k = self.k
        step = self.script[k % len(self.script)]
        files = {p: c.replace("{BEST}", ctx.surface.get(p, ""))
                 for p, c in step.get("files", {}).items()}  # fmt: skip
        for p, (old, new) in step.get("edit", {}).items():
            assert old in ctx.surface[p], f"step {k}: {old!r} is not in the best's {p}"
            files[p] = ctx.surface[p].replace(old, new, 1)
        if step.get("signal"):
            Path(step["signal"]).write_text(str(k))
        return Proposal(
            files=files,
            description=step.get("description", f"step {k}"),
            invalid_reason=step.get("invalid_reason"),
            outside_surface=step.get("outside_surface", []),
        )
