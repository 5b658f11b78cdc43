"""The path of one candidate: carry a proposal over to the current best, screen it, commit
it, gate it, measure it, and decide it, re-applying a winner whose best moved meanwhile.

A mixin of `Loop` (which owns the state: the best, the lock, the ledger, the workspace);
kept apart so each module reads as one step of the loop."""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

from overnight.isolation.integrity import outside_surface, surface_hash
from overnight.judging.constraints import check_constraints
from overnight.judging.rules import Verdict
from overnight.store.records import ExperimentRecord, Proposal

if TYPE_CHECKING:
    from overnight.cli.view import View
    from overnight.experiment.gates import Decider
    from overnight.experiment.measure import Measurer
    from overnight.git.workspace import Workspace
    from overnight.proposers.base import BaseProposer
    from overnight.store.ledger import Ledger
    from overnight.store.study import Study


def diff_text(old: dict[str, str], new: dict[str, str]) -> str:
    import difflib

    out: list[str] = []
    for path in sorted(new):
        a, b = old.get(path, ""), new[path]
        if a != b:
            out += difflib.unified_diff(
                a.splitlines(keepends=True), b.splitlines(keepends=True), f"a/{path}", f"b/{path}"
            )
    return "".join(line if line.endswith("\n") else line + "\n" for line in out)


class CandidateSteps:
    # Provided by Loop.
    study: Study
    cfg: Any
    ws: Workspace
    ledger: Ledger
    view: View
    proposer: BaseProposer
    surface: list[str]
    lock: threading.RLock
    best: ExperimentRecord
    best_files: dict[str, str]
    best_hash: str
    tools: list[tuple[Measurer, Decider]]
    # Also from Loop: _record, _started, _save_proposal.

    def _merge_onto_best(
        self, base_files: dict[str, str], changed: dict[str, str]
    ) -> tuple[dict[str, str] | None, list[str]]:
        """Three-way merge of the change base → changed onto the current best's surface."""
        merged, conflicts = {}, []
        for path, text in changed.items():
            out = self.ws.three_way(base_files.get(path, ""), self.best_files.get(path, ""), text)
            if out is None:
                conflicts.append(path)
            else:
                merged[path] = out
        return (None if conflicts else merged), conflicts

    def try_proposal(
        self, proposal: Proposal, slot: int, existing: int | None = None
    ) -> ExperimentRecord:
        """Number and apply a proposal as a candidate commit on the current best, then gate,
        measure and decide it."""
        with self.lock:
            n = self.ledger.next_number() if existing is None else existing
            base, best_files = self.best, dict(self.best_files)
            stale = bool(proposal.base_commit) and proposal.base_commit != base.commit
            conflicts: list[str] = []
            if stale and proposal.files and not proposal.invalid_reason:
                # Proposed on an older best (run-ahead, parallel slots): carry its change
                # over to the current best before it runs.
                rebased = self.proposer.rebase(proposal, best_files)
                if rebased is not None:
                    proposal.files = rebased
                else:
                    old = self.ws.read_files(proposal.base_commit, list(proposal.files))
                    merged, conflicts = self._merge_onto_best(old, proposal.files)
                    if merged is not None:
                        proposal.files = merged
            files = {**best_files, **proposal.files}
            new_hash = surface_hash(files)
            if existing is None:
                self.ledger.add_proposed(
                    n, parent=base.commit or "", description=proposal.description,
                    rationale=proposal.rationale, hypothesis=proposal.hypothesis,
                    proposer=proposal.proposer, files=proposal.files,
                    diff=diff_text(best_files, proposal.files), surface_hash=new_hash,
                    cost_usd=proposal.cost_usd, usage=proposal.usage, meta=proposal.meta,
                )  # fmt: skip
                self._save_proposal(n, proposal)
            verdict = self._screen(n, proposal, files, new_hash)
            if verdict is None and conflicts:
                verdict = Verdict("invalid", "proposed on an older best; its change does not "
                                  f"merge onto experiment {base.experiment}: conflict in "
                                  + ", ".join(conflicts))  # fmt: skip
            if verdict is not None:
                return self._record(n, verdict, None, {}, None)
            commit = self.ws.make_commit(
                base.commit or "", proposal.files, self.ws.message(proposal.description, n)
            )
            self.ledger.set_state(
                n, "applied", commit=commit, parent=base.commit or "", surface_hash=new_hash,
                diff=diff_text(best_files, proposal.files),
            )  # fmt: skip
            self.ws.set_experiment_ref(n, commit)
        return self._run_candidate(n, commit, proposal.description, slot, proposal)

    def _screen(
        self, n: int, proposal: Proposal, files: dict[str, str], new_hash: str
    ) -> Verdict | None:
        """Reasons a proposal must not run at all."""
        if proposal.invalid_reason:
            return Verdict("invalid", proposal.invalid_reason)
        outside = sorted(
            set(proposal.outside_surface) | set(outside_surface(proposal.files, self.surface))
        )
        if outside:
            return Verdict("rejected", "changed files outside the surface: " + ", ".join(outside))
        if not proposal.files or new_hash == self.best_hash:
            return Verdict(
                "invalid",
                "empty change: the surface is identical to the current "
                f"best (experiment {self.best.experiment})",
            )
        dup = self.ledger.find_hash(new_hash, exclude=n)
        if dup is not None:
            return Verdict(
                "invalid", f"duplicate of experiment {dup}: that surface was already measured"
            )
        return None

    def _run_candidate(
        self, n: int, commit: str, description: str, slot: int, proposal: Proposal | None = None
    ) -> ExperimentRecord:
        measure, decider = self.tools[slot]
        with self.lock:
            base, base_files = self.best, dict(self.best_files)
        self._started(n, description)
        if self.cfg.check.command:
            gate = [("check", self.cfg.check.command)]
            report = measure.execute(n, commit, 0, "check", gate, "")
            if report.exit_code != 0:
                why = "timed out" if report.timed_out else f"exit {report.exit_code}"
                tail = report.output_tail.strip().splitlines()[-3:]
                verdict = Verdict("invalid", f"[check] failed ({why}): " + " | ".join(tail))
                with self.lock:
                    return self._record(n, verdict, None, {}, report.wall_s)
        for _attempt in range(3):
            self.ledger.set_state(n, "running")
            reports = measure.measure(n, commit)
            verdict = measure.failure(reports)
            value, metrics, wall = measure.aggregate(reports)
            if verdict is None:
                verdict = check_constraints(metrics, self.cfg.constraints)
            # The noise-aware rule, the confirming re-run and the holdout gate (decide.py).
            verdict = decider.verdict(n, commit, reports, verdict, base, base_files)
            with self.lock:
                if verdict.status != "keep" or base.commit == self.best.commit:
                    return self._record(n, verdict, value, metrics, wall, commit=commit)
                # It beat the best it was built on, but another slot kept something since:
                # re-apply its change onto the new best and measure it again.
                rebased = self.proposer.rebase(proposal, self.best_files) if proposal else None
                if rebased is not None:
                    merged, conflicts = rebased, []
                else:
                    cand = self.ws.read_files(commit, self.surface)
                    merged, conflicts = self._merge_onto_best(base_files, cand)
                if merged is None or surface_hash({**self.best_files, **merged}) == self.best_hash:
                    why = (
                        "its change does not merge onto experiment "
                        f"{self.best.experiment}: conflict in {', '.join(conflicts)}"
                        if merged is None
                        else "its change is already in the new best"
                    )
                    verdict = Verdict("discard", f"beat experiment {base.experiment}, but {why}")
                    self._mark_stale(n, why)
                    return self._record(n, verdict, value, metrics, wall)
                base, base_files = self.best, dict(self.best_files)
                commit = self.ws.make_commit(
                    base.commit or "", merged, self.ws.message(description, n)
                )
                self.ledger.retire_measurements(n)
                self.ledger.set_state(n, "applied", commit=commit, parent=base.commit)
                self.ws.set_experiment_ref(n, commit)
            self.view.message(
                f"experiment {n} beat its parent; re-measuring it on the new best "
                f"(experiment {base.experiment})"
            )
        verdict = Verdict("discard", "the best kept moving while it was re-measured (3 times)")
        self._mark_stale(n, "the best kept moving")
        with self.lock:
            return self._record(n, verdict, value, metrics, wall)

    def _mark_stale(self, n: int, why: str) -> None:
        """Note in the stored verdict that a would-be keep was discarded because the best
        moved on, so `overnight verify` replays it as such."""
        rec = self.ledger.get(n)
        meta = dict(rec.meta) if rec else {}
        if isinstance(meta.get("verdict"), dict):
            meta["verdict"] = {**meta["verdict"], "stale": why}
            self.ledger.set_state(n, "measured", meta=meta)
