"""A recorded experiment's change, carried onto other code: what `apply`, `finish --drop`
and `finish --ablate` share. The carrying itself is `git.transfer.carry`, the mechanism
the loop uses for a proposal made on an older best; here the proposer's own
re-application comes from its recorded proposal (tune's knob values in the ledger, llm's
SEARCH/REPLACE blocks in `experiments/<n>/response.txt`)."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from overnight.config import resolve_surface
from overnight.errors import ConfigError
from overnight.git.transfer import Carried, Content, carry, decode, encode
from overnight.proposers.registry import reapplier
from overnight.store.records import Proposal
from overnight.store.study import Study


@dataclass
class Recorded:
    """Experiment `n`'s change: the tree it was made on → its own tree."""

    n: int
    parent: str  # commit or tree
    new: str  # commit or tree
    description: str = ""
    proposer: str = ""
    meta: dict[str, Any] = field(default_factory=dict)


class Changes:
    """Carries recorded changes for one study (the surface and diffs are looked up once)."""

    def __init__(self, study: Study, start: str | None) -> None:
        self.study, self.ws = study, study.ws
        self.surface: list[str] = []
        if start and self.ws.commit_exists(start):
            try:
                self.surface = resolve_surface(
                    study.cfg.study.surface, self.ws.tracked_files(start), study.cfg.path.name,
                    root=study.root,
                )  # fmt: skip
            except ConfigError:
                self.surface = []  # the config changed since; the change's own files suffice
        self._paths: dict[tuple[str, str], list[str]] = {}

    def paths(self, rec: Recorded) -> list[str]:
        """The files the change touches."""
        key = (rec.parent, rec.new)
        if key not in self._paths:
            self._paths[key] = self.ws.changed_paths(rec.parent, rec.new)
        return self._paths[key]

    def target_paths(self, rec: Recorded) -> list[str]:
        """What a target must show for the change to be carried: the files it touches and
        the whole surface (tune finds its knobs by name across the surface)."""
        return sorted(set(self.paths(rec)) | set(self.surface))

    def _proposal(self, rec: Recorded, after: dict[str, Content]) -> Proposal:
        reply = self.study.exp_dir(rec.n) / "response.txt"
        return Proposal(
            files={p: t for p, t in after.items() if t is not None},
            description=rec.description, meta=copy.deepcopy(rec.meta), proposer=rec.proposer,
            response=reply.read_text(errors="replace") if reply.is_file() else None,
        )  # fmt: skip

    def carry(self, rec: Recorded, target: Mapping[str, Content]) -> Carried:
        """The change carried onto `target` (path -> content, at least `target_paths`)."""
        paths = self.paths(rec)
        before = {p: decode(b) for p, b in self.ws.read_bytes(rec.parent, paths).items()}
        after = {p: decode(b) for p, b in self.ws.read_bytes(rec.new, paths).items()}
        proposal = self._proposal(rec, after)
        return carry(before, after, target, reapplier(proposal), rec.proposer)

    def onto_tree(self, rec: Recorded, tree: str) -> tuple[str | None, Carried]:
        """The tree `tree` plus the change, or None (with the conflicts) when it does not
        carry; nothing is written but git objects."""
        target = {p: decode(b) for p, b in
                  self.ws.read_bytes(tree, self.target_paths(rec)).items()}  # fmt: skip
        done = self.carry(rec, target)
        if done.files is None:
            return None, done
        changed = {p: encode(c) for p, c in done.files.items() if c != target.get(p)}
        return (self.ws.tree_with(tree, changed) if changed else self.ws.tree_id(tree)), done
