"""A proposer for the red-team tests: replays the scripted proposals and writes every
Context it is given to $OVERNIGHT_SPY_FILE, so a test can prove what a proposer never sees."""

from __future__ import annotations

import dataclasses
import json
import os

from overnight.proposers.base import Context
from overnight.store.records import Proposal
from support.scripted import ScriptedProposer


class SpyProposer(ScriptedProposer):
    name = "spy"

    def propose(self, ctx: Context) -> Proposal:
        with open(os.environ["OVERNIGHT_SPY_FILE"], "a") as fh:
            fh.write(json.dumps(dataclasses.asdict(ctx), default=str) + "\n")
        return super().propose(ctx)
