"""A test proposer that edits the best surface in place and stores what it was shown.

The script (path in $OVERNIGHT_TEST_SCRIPT) is a list of steps, each with `description` and
`edits`: a list of {"path", "old", "new"} replacements applied to the current best surface
(`old` must occur exactly once). Step k is the k-th non-baseline experiment, counted from
the ledger history like `ScriptedProposer`.

The proposal's `prompt` is the context's trace digest, so the loop stores it as
experiments/<n>/prompt.txt, exactly where a real proposer's prompt goes: tests read the
digest of every experiment from there and scan it for what must never reach a prompt.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from overnight.proposers.base import BaseProposer, Context
from overnight.store.records import Proposal


class DigestProposer(BaseProposer):
    name = "digest"

    def __init__(self, seed: int = 0, config: object = None) -> None:
        self.script = json.loads(Path(os.environ["OVERNIGHT_TEST_SCRIPT"]).read_text())

    def propose(self, ctx: Context) -> Proposal:
        k = len(ctx.history) - 1  # the baseline is history[0]
        step = self.script[k % len(self.script)]
        files: dict[str, str] = {}
        for edit in step["edits"]:
            path = edit["path"]
            text = files.get(path, ctx.surface[path])
            if text.count(edit["old"]) != 1:
                return Proposal(files={}, description=step["description"],
                                invalid_reason=f"{edit['old']!r} is not in {path} exactly once",
                                prompt=ctx.trace_digest)  # fmt: skip
            files[path] = text.replace(edit["old"], edit["new"])
        return Proposal(files=files, description=step["description"], prompt=ctx.trace_digest)
