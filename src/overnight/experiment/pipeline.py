"""One candidate, top to bottom.

    transfer onto the best → screen → commit → check gate → measure → judge → sentinels →
    confirm → holdout (or hold: its budget is spent) → (the best moved while it ran:
    transfer again and re-measure) → record

A control (`[judge] controls`) enters at `control` instead of transfer/screen/commit — the
unchanged best as a commit of its own — and then goes through the very same stages; only
`record` knows, and stores it as never kept. Each stage is one method below, in that
order. The pipeline reads the study's state and writes only through the loop's `Recorder`;
judging is `judging.verdict.judge`, the very function `overnight verify` replays.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from overnight.config import Config, ConstraintConfig
from overnight.experiment.controls import Control
from overnight.experiment.measure import Measurer, Run, aggregate
from overnight.experiment.recorder import Best, Recorder
from overnight.experiment.reference import best_holdout, has_holdout, reference
from overnight.experiment.view import View
from overnight.git.transfer import Conflict, carry
from overnight.git.workspace import Workspace
from overnight.isolation.integrity import outside_surface, surface_hash
from overnight.judging import controls
from overnight.judging.constraints import check_constraints
from overnight.judging.effect import effect_of
from overnight.judging.rules import Decision, Rule, Verdict, surface_size
from overnight.judging.sentinels import SentinelRecord, is_time_metric
from overnight.judging.stats import mean
from overnight.judging.verdict import (
    ConfirmRecord,
    HoldoutRecord,
    Reference,
    VerdictRecord,
    judge,
    metric_decision,
)
from overnight.store.evidence import LedgerEvidence
from overnight.store.records import ExperimentRecord, Proposal

# How often a winner is carried onto a best that moved while it was measured, before it
# is given up on (each round is a full re-measurement).
MAX_ROUNDS = 3


def diff_text(old: dict[str, str], new: dict[str, str]) -> str:
    out: list[str] = []
    for path in sorted(new):
        a, b = old.get(path, ""), new[path]
        if a != b:
            out += difflib.unified_diff(
                a.splitlines(keepends=True), b.splitlines(keepends=True), f"a/{path}", f"b/{path}"
            )
    return "".join(line if line.endswith("\n") else line + "\n" for line in out)


@dataclass
class Transfer:
    """How a change made on an older best was carried onto the current one."""

    files: dict[str, str] | None  # the carried change, None when it does not carry
    how: str  # "none" (made on the current best), "proposer" (its own rebase), "merge"
    conflicts: list[Conflict]
    made_on: str = ""  # the best it was made on
    onto: int | None = None  # the experiment it was carried onto
    by: str = ""  # the proposer whose own rebase carried it

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"transferred": self.files is not None, "how": self.how,
                               "from": self.made_on, "onto": self.onto}  # fmt: skip
        if self.by:
            out["by"] = self.by
        if self.conflicts:
            out["conflicts"] = [c.as_dict() for c in self.conflicts]
        return out

    def reason(self) -> str:
        return "; ".join(c.describe() for c in self.conflicts)


class Pipeline:
    def __init__(
        self,
        cfg: Config,
        recorder: Recorder,
        measurers: list[Measurer],
        ws: Workspace,
        surface: list[str],
        rebase: Callable[[Proposal, dict[str, str]], dict[str, str] | None],
        view: View,
    ) -> None:
        self.cfg = cfg
        self.rec = recorder
        self.measurers = measurers
        self.ws = ws
        self.surface = surface
        self.rebase = rebase  # the proposer's own re-application of its change
        self.view = view
        self.evidence = LedgerEvidence(recorder.ledger)
        self.constraints = [c.model_dump() for c in cfg.constraints]
        self._baseline_ids: list[int] | None = None

    # == the stages, in order ===============================================================

    def run(self, proposal: Proposal, slot: int, existing: int | None = None) -> ExperimentRecord:
        """Number, carry over, screen and commit `proposal` (or make a control), then
        evaluate it in `slot`. `existing`: the number of an experiment a stopped controller
        left undecided."""
        with self.rec.lock:
            best = self._best()
            n = self.rec.next_number() if existing is None else existing
            moved = None
            if isinstance(proposal, Control):
                commit = self.control(n, proposal, best, fresh=existing is None)
            else:
                moved = self.transfer(proposal, proposal.base_commit, best)
                if moved.files is not None:
                    proposal.files = moved.files
                files = {**best.files, **proposal.files}
                digest = surface_hash(files)
                if existing is None:
                    self.rec.proposed(n, proposal, best.commit,
                                      diff_text(best.files, proposal.files), digest)  # fmt: skip
                verdict = self.screen(n, proposal, files, digest, best, moved)
                if verdict is not None:
                    return self.rec.verdict(n, verdict, None)
                commit = self.commit(n, proposal, best, digest)
        return self.evaluate(n, commit, proposal, best, slot, moved)

    def control(self, n: int, proposal: Control, best: Best, fresh: bool) -> str:
        """A control: the best resubmitted as a commit of its own. It is the best's twin —
        the best's tree and message on the best's parent — so its diff against its parent,
        its surface and its message look like a candidate's; no screen runs (its surface is
        the best's: the duplicate check would give it away)."""
        proposal.files = dict(best.files)
        proposal.description = f"control: the unchanged best (experiment {best.experiment})"
        parent = best.record.parent or best.commit  # the baseline: a child with its tree
        if fresh:
            self.rec.proposed(n, proposal, parent, "", best.hash, control_of=best.experiment)
        commit = self.ws.commit_tree(self.ws.tree_id(best.commit), parent,
                                     self.ws.message(best.record.description, n))  # fmt: skip
        self.rec.applied(n, commit, parent, surface_hash=best.hash, diff="",
                         control_of=best.experiment, description=proposal.description)  # fmt: skip
        return commit

    def transfer(self, proposal: Proposal, made_on: str, best: Best) -> Transfer:
        """Carry a change made on an older best (run-ahead, parallel slots) onto `best` with
        `git.transfer.carry`: the proposer's own `rebase()` first (tune re-sets its knobs,
        llm re-applies its SEARCH/REPLACE blocks), else a word-level three-way merge. The
        carried candidate is measured like any other; the record says how it got there."""
        if not made_on or made_on == best.commit or not proposal.files:
            return Transfer(None, "none", [])
        if proposal.invalid_reason:
            return Transfer(None, "none", [])
        old = self.ws.read_files(made_on, list(proposal.files))
        done = carry(old, proposal.files, best.files,
                     lambda surface: self.rebase(proposal, surface), proposal.proposer)  # fmt: skip
        files = None if done.files is None else {p: t or "" for p, t in done.files.items()}
        moved = Transfer(files, done.how, done.conflicts, made_on, best.experiment, done.by)
        proposal.meta["transfer"] = moved.as_dict()  # stored with the proposal in the ledger
        return moved

    def screen(
        self, n: int, proposal: Proposal, files: dict[str, str], digest: str, best: Best,
        moved: Transfer,
    ) -> Verdict | None:  # fmt: skip
        """Reasons a proposal must not run at all."""
        if proposal.invalid_reason:
            return Verdict("invalid", proposal.invalid_reason)
        outside = sorted(
            set(proposal.outside_surface) | set(outside_surface(proposal.files, self.surface))
        )
        if outside:
            return Verdict("rejected", "changed files outside the surface: " + ", ".join(outside))
        if moved.conflicts:
            why = f"conflict in {moved.reason()}"
            return Verdict("invalid", "proposed on an older best; its change does not merge "
                           f"onto experiment {best.experiment}: {why}")  # fmt: skip
        if not proposal.files or digest == best.hash:
            return Verdict("invalid", "empty change: the surface is identical to the current "
                           f"best (experiment {best.experiment})")  # fmt: skip
        dup = self.rec.ledger.find_hash(digest, exclude=n)
        if dup is not None:
            return Verdict("invalid", f"duplicate of experiment {dup}: that surface was already "
                           "measured")  # fmt: skip
        return None

    def commit(self, n: int, proposal: Proposal, best: Best, digest: str) -> str:
        commit = self.ws.make_commit(best.commit, proposal.files,
                                     self.ws.message(proposal.description, n))  # fmt: skip
        self.rec.applied(n, commit, best.commit, surface_hash=digest,
                         diff=diff_text(best.files, proposal.files))  # fmt: skip
        return commit

    def evaluate(
        self, n: int, commit: str, proposal: Proposal | None, best: Best, slot: int,
        moved: Transfer | None = None,
    ) -> ExperimentRecord:  # fmt: skip
        """Gate, measure and judge candidate `n`; carry a winner over when the best moved."""
        m = self.measurers[slot]
        description = proposal.description if proposal else ""
        self.rec.started(n, description)
        self.view.experiment_started(n, description, self.cfg.study.budget)
        control = isinstance(proposal, Control)
        gate = self.check(n, commit, m)
        if gate is not None:
            verdict, wall = gate
            return self.record(n, verdict, None, [], None, best, control, wall_s=wall)
        transfer = moved.as_dict() if moved is not None and moved.how != "none" else None
        for round_ in range(1, MAX_ROUNDS + 1):
            self.rec.running_state(n)
            runs = self.measure(n, commit, m)
            verdict, record = self.judge(n, commit, runs, best, m)
            record.transfer = transfer
            with self.rec.lock:
                now = self._best()
                if control or verdict.status != "keep" or now.commit == best.commit:
                    return self.record(n, verdict, record, runs, commit, best, control)
                # It beat the best it was built on, but another slot kept something since.
                cand = Proposal(files=self.ws.read_files(commit, self.surface), description="")
                if proposal is not None:
                    cand = proposal
                again = self.transfer(cand, best.commit, now)
                files = {**now.files, **(again.files or {})}
                why = ""
                if again.files is None:
                    why = (f"its change does not merge onto experiment {now.experiment}: "
                           f"conflict in {again.reason()}")  # fmt: skip
                elif surface_hash(files) == now.hash:
                    why = "its change is already in the new best"
                elif round_ == MAX_ROUNDS:
                    why = f"the best kept moving while it was re-measured ({MAX_ROUNDS} times)"
                if why:
                    record.stale = why
                    return self.record(n, judge(record, self.evidence, n), record, runs, None,
                                       best, control)  # fmt: skip
                assert again.files is not None
                best = now
                commit = self.ws.make_commit(best.commit, again.files,
                                             self.ws.message(cand.description, n))  # fmt: skip
                self.rec.retire(n)
                self.rec.applied(n, commit, best.commit)
                transfer = {**again.as_dict(), "rounds": round_}
            self.view.message(f"experiment {n} beat its parent; re-measuring it on the new best "
                         f"(experiment {best.experiment})")  # fmt: skip
        raise AssertionError("unreachable: the last round always records")

    def check(self, n: int, commit: str, m: Measurer) -> tuple[Verdict, float] | None:
        """`[check]`: a cheap gate (tests, lint) that must pass before the metric run."""
        if not self.cfg.check.command:
            return None
        run = m.execute(n, commit, 0, "check", [("check", self.cfg.check.command)], "check")
        step = run.facts.failed_step
        if step is None and not run.facts.lost:
            return None
        why = "timed out" if step and step.timed_out else f"exit {step.exit_code if step else '?'}"
        tail = (step.output_tail if step else run.facts.lost).strip().splitlines()[-3:]
        return Verdict("invalid", f"[check] failed ({why}): " + " | ".join(tail)), run.wall_s

    def measure(self, n: int, commit: str, m: Measurer) -> list[Run]:
        return m.measure(n, commit)

    def judge(
        self, n: int, commit: str, runs: list[Run], best: Best, m: Measurer
    ) -> tuple[Verdict, VerdictRecord]:
        """The verdict of candidate `n` measured in `runs`, with the record of how it was
        reached; a would-be keep goes on to the confirming re-run and the holdout."""
        ids = [r.id for r in runs]
        if any(r.status is not None for r in runs):
            locked = sorted({p for r in runs for p in r.locked_changed})
            record = VerdictRecord("failure", candidate=ids, locked_changed=locked)
            return judge(record, self.evidence, n), record
        _, metrics, _ = aggregate(runs)
        if check_constraints(metrics, self.cfg.constraints) is not None:
            record = VerdictRecord("constraint", candidate=ids, constraints=self.constraints)
            return self._judge(record, n, metrics), record
        record = self._metric_record(n, commit, ids, best)
        verdict = self._judge(record, n, metrics)
        if verdict.status == "keep" and self.sentinels(record, best):
            verdict = self._judge(record, n, metrics)
        if verdict.status == "keep" and self.cfg.metric.confirm:
            self.confirm(n, commit, record, m)
            verdict = self._judge(record, n, metrics)
        if verdict.status == "keep" and self.cfg.holdout.command:
            self.holdout(n, commit, record, best, m)
            verdict = self._judge(record, n, metrics)
        return verdict, record

    def sentinels(self, record: VerdictRecord, best: Best) -> bool:
        """The evidence the implausibility checks of a would-be keep need ([judge]
        wall_ratio, max_jump); False when both are off."""
        j = self.cfg.judge
        ratio = 0.0 if is_time_metric(self.cfg.metric.name) else j.wall_ratio
        jump = j.jump(best.record.value or 0.0)
        if not ratio and not jump:
            return False
        record.stage = "sentinel"
        record.sentinel = SentinelRecord(ratio, self._baseline_runs() if ratio else [], jump)
        return True

    def confirm(self, n: int, commit: str, record: VerdictRecord, m: Measurer) -> None:
        """Re-run a would-be keep once more (`repeats` runs, new seeds)."""
        record.stage = "confirm"
        runs = m.measure(n, commit, kind="confirm", first_repeat=self.cfg.metric.repeats)
        record.confirm = ConfirmRecord(ids=[r.id for r in runs])
        failed = next((r for r in runs if r.status is not None), None)
        broken = check_constraints(runs[-1].metrics, self.cfg.constraints) if runs else None
        if failed is not None:
            record.confirm.failed, record.confirm.reason = failed.status, failed.error or ""
        elif broken is not None:
            record.confirm.failed, record.confirm.reason = broken.status, broken.reason

    def holdout(self, n: int, commit: str, record: VerdictRecord, best: Best, m: Measurer) -> None:
        """Measure a would-be keep on the hidden holdout, and the best's when it has none;
        once the night's `[holdout] budget` of reads is spent, hold it for the morning."""
        h = self.cfg.holdout
        record.stage = "holdout"
        reads = 1 if has_holdout(self.rec.ledger, best.record) else 2
        if not self.rec.reserve_holdout(reads, h.budget):
            record.hold = (f"the night's [holdout] budget of {h.budget} reads is spent "
                           f"({self.rec.holdout_reads} read)")  # fmt: skip
            return
        try:
            _, ref_id = best_holdout(self.rec.ledger, m, best.record)
            run = m.measure_holdout(n, commit)
        finally:
            self.rec.release_holdout(reads)
        record.holdout = HoldoutRecord(ids=[run.id], reference_ids=[ref_id] if ref_id else [],
                                       tolerance=h.tolerance, goal=h.goal)  # fmt: skip

    def record(
        self, n: int, verdict: Verdict, record: VerdictRecord | None, runs: list[Run],
        commit: str | None, best: Best, control: bool, wall_s: float | None = None,
    ) -> ExperimentRecord:  # fmt: skip
        """Store the verdict. A keep carries its effect size into the commit it lands as; a
        control is stored as never kept, with what the rule gave it."""
        value, metrics, wall = aggregate(runs)
        isolation = runs[0].facts.isolation if runs else None
        decision = self._decision(record, n) if record is not None else None
        extra: dict[str, Any] = {}
        trailer = None
        if control:
            gain = decision.gain if decision is not None else None
            extra["control"] = controls.outcome(verdict, best.experiment, gain)
            verdict = controls.stored_verdict(verdict, best.experiment)
        elif verdict.status == "keep" and record is not None and decision is not None:
            assert record.reference is not None
            effect = effect_of(decision, (len(record.candidate), len(record.reference.ids) or 1))
            extra["gain"] = effect.as_dict()
            trailer = effect.trailer(self.cfg.metric.name)
        return self.rec.verdict(n, verdict, record, value, metrics,
                                wall if wall_s is None else wall_s, commit=commit,
                                isolation=isolation, extra=extra, trailer=trailer)  # fmt: skip

    # == helpers ============================================================================

    def _best(self) -> Best:
        assert self.rec.best is not None, "no best before the baseline"
        return self.rec.best

    def _judge(self, record: VerdictRecord, n: int, metrics: dict[str, float]) -> Verdict:
        constraints = [ConstraintConfig(**c) for c in record.constraints]
        return judge(record, self.evidence, n, metrics, constraints)

    def _metric_record(self, n: int, commit: str, ids: list[int], best: Best) -> VerdictRecord:
        m = self.cfg.metric
        ref, ref_ids = reference(self.rec.ledger, best.record)
        rule = Rule(m.name, m.goal, m.alpha, m.threshold(mean(ref)), m.prefer_simpler)
        noise = None
        if min(len(ids), len(ref)) < 2 and ids:
            with self.rec.lock:
                noise = self.rec.noise.before(min(ids) - 1, n)
        sizes = None
        if m.prefer_simpler:
            sizes = (surface_size(best.files), surface_size(self.ws.read_files(commit,
                                                                                self.surface)))
        record = VerdictRecord("metric", candidate=ids, rule=rule,
                               reference=Reference(best.experiment, ref_ids), noise=noise,
                               sizes=sizes)  # fmt: skip
        first = metric_decision(record, self.evidence, n)
        record.method, record.kind, record.p = first.method, first.kind, first.p
        return record

    def _decision(self, record: VerdictRecord, n: int) -> Decision | None:
        """The metric rule's decision on the candidate's runs (None: it never got there)."""
        if record.rule is None or record.reference is None:
            return None
        return metric_decision(record, self.evidence, n)

    def _baseline_runs(self) -> list[int]:
        """The measurement ids of the baseline's runs (the wall-time sentinel's yardstick)."""
        if self._baseline_ids is None:
            base = self.rec.ledger.get(0)
            verdict = base.meta.get("verdict") if base is not None else None
            self._baseline_ids = list((verdict or {}).get("candidate") or [])
        return self._baseline_ids
