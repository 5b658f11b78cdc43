"""The one writer of a night: the study's ledger, its branch and its refs.

Every stage of the pipeline writes through here, so there is one place where a transition
is stored before the side effect that follows it (what makes `kill -9` recoverable), one
place where the branch moves (by compare-and-swap, only on a keep), and one in-memory view
of the study (best, history, counts) kept in step with the ledger, so that per-experiment
bookkeeping costs the same at experiment 10 and at experiment 10,000.
"""

from __future__ import annotations

import bisect
import json
import threading
import time
from dataclasses import dataclass, field
from operator import attrgetter
from typing import TYPE_CHECKING, Any

from overnight.experiment.reference import NoisePool
from overnight.isolation.integrity import surface_hash
from overnight.judging.rules import Verdict
from overnight.judging.verdict import VerdictRecord
from overnight.store.ledger import Ledger
from overnight.store.records import STATUSES, ExperimentRecord, Proposal
from overnight.store.study import Study

if TYPE_CHECKING:
    from overnight.experiment.measure import Run
    from overnight.git.workspace import Workspace


def with_trailer(ws: Workspace, commit: str, trailer: str) -> str:
    """`commit` again (same tree, parent and message) with `trailer` added to the message:
    the commit a keep lands as (its measured candidate stays as it was measured)."""
    c = ws.repo[commit]
    message = c.message.rstrip("\n") + "\n" + trailer + "\n"
    return ws.commit_tree(str(c.tree_id), str(c.parent_ids[0]), message)


_number = attrgetter("experiment")
FAILED = ("crash", "timeout")  # the failures whose log tail a proposer is shown


@dataclass
class Best:
    record: ExperimentRecord
    files: dict[str, str]  # the surface at the best commit
    hash: str

    @property
    def commit(self) -> str:
        return self.record.commit or ""

    @property
    def experiment(self) -> int:
        return self.record.experiment


@dataclass
class Tallies:
    """What the live view shows, maintained incrementally."""

    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(STATUSES, 0))
    cost_usd: float = 0.0
    baseline: float | None = None
    controls: int = 0  # decided controls (counted under the status they were stored with)


class Recorder:
    def __init__(self, study: Study, ledger: Ledger, ws: Workspace, surface: list[str]) -> None:
        self.study = study
        self.ledger = ledger
        self.ws = ws
        self.surface = surface
        self.metric = study.cfg.metric.name
        # Guards the best, the numbering, decisions and the branch across slot threads;
        # runs happen outside it.
        self.lock = threading.RLock()
        self.history: list[ExperimentRecord] = []  # in decision order
        # What a proposer is shown: the same less controls, in number order, and the
        # highest-numbered crash or timeout among them (kept here so that building a
        # proposer's context costs the same at experiment 10 and at experiment 10,000).
        self.proposer_history: list[ExperimentRecord] = []
        self.last_failure: ExperimentRecord | None = None
        self.tallies = Tallies()
        self.best: Best | None = None
        self.running: dict[int, str] = {}  # experiments in flight: description
        # Proposals made but not numbered yet (waiting for a slot): id(proposal) -> description.
        self.queued: dict[int, str] = {}
        self.controls: set[int] = set()  # experiments of this night that are controls
        self._clock = time.monotonic()
        self._next: int | None = None
        self.noise: NoisePool  # set by load()
        self.holdout_reads = 0  # holdout runs this night (this `overnight run`)
        self._holdout_reserved = 0  # reads of would-be keeps on their way

    # -- start-up ---------------------------------------------------------------------------

    def load(self) -> None:
        """Read what the ledger holds (once per `run`); later verdicts are added in memory."""
        self.history = [r for r in self.ledger.records() if r.status is not None]
        self.history.sort(key=lambda r: (r.decided_at or 0.0, r.experiment))
        self.proposer_history = sorted((r for r in self.history if r.control_of is None),
                                       key=_number)  # fmt: skip
        self.last_failure = next((r for r in reversed(self.proposer_history)
                                  if r.status in FAILED), None)  # fmt: skip
        self.tallies = Tallies(self.ledger.counts(), self.ledger.total_cost())
        self.tallies.controls = sum(1 for r in self.history if r.control_of is not None)
        base = self.ledger.get(0)
        self.tallies.baseline = base.value if base else None
        # A night is one `overnight run`: the holdout budget counts the reads after this.
        night = {"started_at": time.time(), "after_event": self.ledger.last_event_id()}
        self.ledger.set_meta("night", json.dumps(night))
        self.holdout_reads = 0
        self._next = self.ledger.next_number()
        self.noise = NoisePool(self.ledger)
        if self.ledger.last_keep() is not None:
            self.load_best()
        self.ledger.write_tsv(self.study.tsv_path, self.metric)

    def load_best(self) -> None:
        keep = self.ledger.last_keep()
        assert keep is not None and keep.commit
        files = self.ws.read_files(keep.commit, self.surface)
        self.best = Best(keep, files, surface_hash(files))

    # -- transitions ------------------------------------------------------------------------

    def next_number(self) -> int:
        with self.lock:
            if self._next is None:
                self._next = self.ledger.next_number()
            n, self._next = self._next, self._next + 1
            return n

    def waiting(self, proposal: Proposal) -> None:
        """A proposal made ahead, before a slot takes it: in flight for later proposals."""
        with self.lock:
            self.queued[id(proposal)] = proposal.description

    def proposed(
        self, n: int, proposal: Proposal, parent: str, diff: str, digest: str,
        control_of: int | None = None,
    ) -> None:  # fmt: skip
        with self.lock:
            self.queued.pop(id(proposal), None)
            if control_of is None:
                self.running[n] = proposal.description
            else:
                self.controls.add(n)  # blinded: never listed to the proposer as in flight
        self.ledger.add_proposed(
            n, parent=parent, description=proposal.description, rationale=proposal.rationale,
            hypothesis=proposal.hypothesis, proposer=proposal.proposer, files=proposal.files,
            diff=diff, surface_hash=digest, cost_usd=proposal.cost_usd, usage=proposal.usage,
            meta=proposal.meta, control_of=control_of,
        )  # fmt: skip
        self.tallies.cost_usd += proposal.cost_usd
        self._save_proposal(n, proposal)

    def applied(self, n: int, commit: str, parent: str, **fields: Any) -> None:
        self.ledger.set_state(n, "applied", commit=commit, parent=parent, **fields)
        self.ws.set_experiment_ref(n, commit)

    def started(self, n: int, description: str) -> None:
        # Published for `status` and the dashboard, which read the ledger from other processes.
        with self.lock:
            self.running[n] = description
            current = {"experiment": n, "description": description, "started_at": time.time(),
                       "budget_s": self.study.cfg.study.budget}  # fmt: skip
            self.ledger.set_meta("current", json.dumps(current))

    def running_state(self, n: int) -> None:
        self.ledger.set_state(n, "running")

    def measurement(self, n: int, kind: str, repeat: int, run: Run) -> int:
        # What the run printed is stored even when it failed (what `show` tells); judging
        # reads a value only from a run that exited 0 within its budget.
        mid = self.ledger.add_measurement(
            n, kind, repeat, run.printed, run.metrics, run.exit_code, run.timed_out,
            run.wall_s, run.error,
        )  # fmt: skip
        with self.lock:
            self.noise.add(mid, n, kind, run.value)
        if kind == "holdout":  # an event, never deleted: re-measured experiments count too
            self.ledger.event("holdout_read", experiment=n, measurement=mid)
            with self.lock:
                self.holdout_reads += 1
        return mid

    def reserve_holdout(self, reads: int, budget: int) -> bool:
        """Claim `reads` holdout runs of the night's `budget` (0: no limit) for a would-be
        keep; False when they would exceed it. Release them once run."""
        with self.lock:
            if budget and self.holdout_reads + self._holdout_reserved + reads > budget:
                return False
            self._holdout_reserved += reads
            return True

    def release_holdout(self, reads: int) -> None:
        with self.lock:
            self._holdout_reserved -= reads

    def retire(self, n: int) -> None:
        """Keep the runs of a candidate carried onto a newer best, but out of the way of its
        new verdict (their kind gets a `stale-` prefix)."""
        self.ledger.retire_measurements(n)
        with self.lock:
            self.noise.retire(n)

    def aborted(self, n: int, reason: str) -> None:
        with self.lock:
            self.running.pop(n, None)
        self.ledger.set_state(n, "aborted", reason=reason)

    def event(self, kind: str, /, **data: Any) -> None:
        self.ledger.event(kind, **data)

    def verdict(
        self,
        n: int,
        verdict: Verdict,
        record: VerdictRecord | None,
        value: float | None = None,
        metrics: dict[str, float] | None = None,
        wall_s: float | None = None,
        commit: str | None = None,
        isolation: str | None = None,
        extra: dict[str, Any] | None = None,
        trailer: str | None = None,
    ) -> ExperimentRecord:
        """Store the verdict with the record of how it was reached (and `extra` meta); on a
        keep, advance the branch from the best it was judged against (compare-and-swap) and
        make it the best. A keep with a `trailer` (its effect size) lands as the candidate's
        twin whose message carries it. Call with `lock` held when it can be a keep."""
        if verdict.status in ("crash", "timeout"):
            value = None  # a failed run has no result, whatever it printed before failing
        meta = None
        if record is not None or isolation is not None or extra:
            row = self.ledger.get(n)
            meta = dict(row.meta) if row else {}
            if record is not None:
                meta["verdict"] = record.to_dict()
            if isolation is not None:
                meta["isolation"] = isolation
            meta.update(extra or {})
        keep = commit if verdict.status == "keep" and commit else None
        landed = None
        if keep and trailer:
            # Written before the verdict that names it: a kill in between leaves an object
            # nothing points to, and the resumed experiment is judged again.
            landed = with_trailer(self.ws, keep, trailer)
            self.ws.set_experiment_ref(n, landed)
        self.ledger.set_verdict(n, verdict.status, verdict.reason, value, metrics or {}, wall_s,
                                meta=meta, commit=landed)  # fmt: skip
        if keep:
            expected = self.best.commit if self.best is not None else None
            self.ws.set_branch(landed or keep, expected_old=expected)
            self.load_best()
        rec = self.ledger.get(n)
        assert rec is not None
        with self.lock:
            self.running.pop(n, None)
            self.history.append(rec)
            if rec.control_of is None:
                bisect.insort(self.proposer_history, rec, key=_number)  # mostly an append
                if rec.status in FAILED and (self.last_failure is None
                                             or n > self.last_failure.experiment):
                    self.last_failure = rec
            if rec.status in self.tallies.counts:
                self.tallies.counts[rec.status] += 1
            self.tallies.controls += rec.control_of is not None
            if n == 0:
                self.tallies.baseline = rec.value
        self.ledger.append_tsv(self.study.tsv_path, self.metric, rec)
        self.account_time()
        return rec

    def account_time(self) -> None:
        now = time.monotonic()
        with self.lock:
            total = float(self.ledger.get_meta("run_seconds", "0") or 0) + now - self._clock
            self._clock = now
            self.ledger.set_meta("run_seconds", f"{total:.3f}")

    # -- reading ----------------------------------------------------------------------------

    def summary(self) -> dict[str, Any]:
        """The fields the live view shows, without querying the ledger."""
        t, best = self.tallies, self.best
        tried = max(0, sum(t.counts.values()) - 1)
        proposed = tried - t.controls  # a control is not a proposal: no hit to score
        kept = max(0, t.counts["keep"] - 1)
        run_s = float(self.ledger.get_meta("run_seconds", "0") or 0)
        return {
            "study": self.study.name, "branch": self.study.branch,
            "metric": {"name": self.metric, "goal": self.study.cfg.metric.goal},
            "baseline": {"experiment": 0, "value": t.baseline},
            "best": {"experiment": best.experiment if best else None,
                     "value": best.record.value if best else None,
                     "commit": best.commit if best else None},
            "counts": dict(t.counts), "cost_usd": round(t.cost_usd, 6),
            "hit_rate": kept / proposed if proposed > 0 else None,
            "experiments_per_hour": tried / (run_s / 3600) if run_s > 0 else None,
        }  # fmt: skip

    def _save_proposal(self, n: int, proposal: Proposal) -> None:
        d = self.study.exp_dir(n)
        d.mkdir(parents=True, exist_ok=True)
        info = {
            "description": proposal.description, "rationale": proposal.rationale,
            "hypothesis": proposal.hypothesis, "proposer": proposal.proposer,
            "invalid_reason": proposal.invalid_reason, "outside_surface": proposal.outside_surface,
            "usage": proposal.usage, "cost_usd": proposal.cost_usd, "meta": proposal.meta,
            "base_commit": proposal.base_commit,
        }  # fmt: skip
        (d / "proposal.json").write_text(json.dumps(info, indent=2, default=str))
        if proposal.prompt is not None:
            (d / "prompt.txt").write_text(proposal.prompt)
        if proposal.response is not None:
            (d / "response.txt").write_text(proposal.response)
