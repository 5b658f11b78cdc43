"""The orchestrator: one readable method per step of an experiment.

propose → apply (candidate commit) → check gate → measure (executor) → judge → record.
The controller is the only writer of git and the ledger; every state transition is written
before the side effect that follows it, so `kill -9` at any moment is recoverable.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import sqlite3
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from overnight.cli.view import NullView, View
from overnight.config import resolve_surface
from overnight.errors import OvernightError, UsageError
from overnight.executors.registry import make_executor
from overnight.experiment.context import build_context
from overnight.experiment.gates import Decider
from overnight.experiment.measure import Interrupted, Measurer
from overnight.experiment.pipeline import CandidateSteps
from overnight.experiment.scheduler import Scheduler
from overnight.isolation.integrity import ProtectedFiles, surface_hash
from overnight.isolation.runner import kill_marked, scrub_env
from overnight.isolation.sandbox import Sandbox
from overnight.judging.rules import Verdict
from overnight.proposers.base import BaseProposer, Context
from overnight.proposers.registry import load_proposer
from overnight.store.ledger import Ledger
from overnight.store.lock import study_lock
from overnight.store.records import ExperimentRecord, Proposal
from overnight.store.study import Study, status_of

DEFAULT_KEY_ENV = {"anthropic": "ANTHROPIC_API_KEY", "openai": "OPENAI_API_KEY"}


@dataclass
class RunOptions:
    experiments: int | None = None  # new experiments in this invocation (baseline excluded)
    hours: float | None = None
    patience: int | None = None  # stop after this many experiments in a row without a keep
    proposer: str | None = None
    seed: int = 0
    max_cost: float | None = None
    workers: int | None = None
    executor: str | None = None
    # Proposals prepared ahead of the slots (None: one per slot; 0: propose, then run).
    lookahead: int | None = None


@dataclass
class RunSummary:
    stopped_because: str
    ran: int = 0
    kept: int = 0
    status: dict[str, Any] = field(default_factory=dict)


class Loop(CandidateSteps):
    def __init__(self, study: Study, options: RunOptions, view: View | None = None) -> None:
        self.study = study
        self.cfg = study.cfg
        self.opts = options
        self.view = view or NullView()
        self.ws = study.ws
        self.stop_event = threading.Event()
        self.stop_reason = ""
        # Guards the best, the numbering, the ledger's decisions and the study branch across
        # slot threads; runs happen outside it.
        self.lock = threading.RLock()
        self.marker_prefix = (
            "overnight:"
            + hashlib.sha1(str(study.root).encode()).hexdigest()[:10]
            + f":{study.name}"
        )

    # == the whole run ======================================================================

    def run(self) -> RunSummary:
        with study_lock(self.study.state_dir, self.study.name):
            self._setup()
            previous = self._install_signals()
            try:
                self._recover()
                self._baseline()
                t0 = time.monotonic()
                resumed = kept_before = 0
                for item in self._pending:
                    if self.stop_event.is_set():
                        break
                    rec = self._resume_experiment(item)
                    resumed, kept_before = resumed + 1, kept_before + (rec.status == "keep")
                lookahead = self.slots if self.opts.lookahead is None else self.opts.lookahead
                sched = Scheduler(self, self.slots, lookahead, t0)
                # A resumed experiment counts towards --experiments like a new one.
                sched.tally.started = sched.tally.ran = resumed
                sched.tally.kept = kept_before
                why = sched.run()
                ran, kept = sched.tally.ran, sched.tally.kept
                summary = RunSummary(why, ran, kept)
            except Interrupted:
                summary = RunSummary(self.stop_reason or "interrupted")
            finally:
                self._restore_signals(previous)
                self._teardown()
            summary.status = status_of(self.study, self.ledger)
            self.view.finished(summary.stopped_because, summary.status)
            self.ledger.close()
            return summary

    # == set-up and recovery ================================================================

    def _setup(self) -> None:
        cfg = self.cfg
        # Validate everything before the first write, so a usage error changes nothing.
        fresh = not self.study.ledger_path.exists()
        self.ledger = Ledger(self.study.ledger_path, readonly=True) if not fresh else None  # type: ignore[assignment]
        try:
            start = None if fresh else self.ledger.get_meta("start_commit")
        except sqlite3.OperationalError:  # killed while creating the ledger: no tables yet
            self.ledger.close()
            self.ledger, fresh, start = None, True, None  # type: ignore[assignment]
        if start is None or self.ledger is None or self.ledger.last_keep() is None:
            start = self.ws.user_head()
        elif not self.ws.commit_exists(start):
            raise UsageError(
                f"study {self.study.name!r} started at commit {start[:12]}, which no longer "
                "exists in this repository; start a new study with another [study].name"
            )
        self.start_commit = start
        signature = f"{cfg.metric.name}:{cfg.metric.goal}"
        old = None if fresh else self.ledger.get_meta("metric")
        if old is not None and old != signature:
            raise UsageError(
                f"{cfg.path.name}: [metric] changed from {old!r} to {signature!r} since study "
                f"{self.study.name!r} began; verdicts would not be comparable. Use a new "
                "[study].name for the new metric."
            )
        tracked = self.ws.tracked_files(start)
        self.surface = resolve_surface(
            cfg.study.surface, tracked, cfg.path.name, root=self.study.root
        )
        self.protected = ProtectedFiles(self.study.root, cfg.study.protect, tracked)
        # Refuses (exit 2, nothing written) when the sandbox was asked for and cannot work.
        sandbox = Sandbox(cfg.sandbox, self.study.root, dict(os.environ))
        sandbox.check()
        self.executor = make_executor(
            self.opts.executor or cfg.executor.kind, cfg, self.ws, self.surface, self.protected,
            workers=self.opts.workers, sandbox=sandbox,
        )  # fmt: skip
        kind = self.opts.proposer or cfg.proposer.kind
        self.proposer: BaseProposer
        self.proposer, why = load_proposer(kind, cfg, seed=self.opts.seed)
        key_env = cfg.proposer.api_key_env or DEFAULT_KEY_ENV.get(cfg.proposer.provider, "")
        self.base_env = scrub_env(os.environ, cfg.run.pass_env, drop=[key_env] if key_env else [])
        if self.ledger is not None:
            self.ledger.close()
        self.ws.ensure_excluded()
        self.ledger = Ledger(self.study.ledger_path)
        self.slots = max(1, getattr(self.executor, "slots", 1))
        self.tools = [
            (m := Measurer(
                self.study, self.executor, self.ledger, self.base_env, self.opts.seed,
                self.marker_prefix, lambda: self.stop_reason, slot=i,
            ), Decider(self.study, self.ledger, m, self.ws, self.surface))
            for i in range(self.slots)
        ]  # fmt: skip
        self.measure, self.decider = self.tools[0]
        self._remeasuring = threading.Lock()
        self.view.message(why)
        self._run_clock = time.monotonic()

    def _install_signals(self) -> dict[int, Any]:
        if threading.current_thread() is not threading.main_thread():
            return {}
        previous = {}

        def handler(signum: int, _frame: Any) -> None:
            if self.stop_event.is_set():
                raise KeyboardInterrupt  # second Ctrl-C: stop waiting for the cleanup
            self.stop_reason = f"stopped by {signal.Signals(signum).name}"
            self.stop_event.set()
            self.executor.stop()
            self.view.message(f"{self.stop_reason}: ending the current experiment…")

        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, handler)
        return previous

    def _restore_signals(self, previous: dict[int, Any]) -> None:
        for sig, old in previous.items():
            signal.signal(sig, old)

    def _teardown(self) -> None:
        self._account_time()
        self.ledger.set_meta("current", "")
        self.proposer.close()
        self.executor.close()

    def _recover(self) -> None:
        """Undo what a killed controller left: orphan runs, git locks, half-done rows."""
        killed = kill_marked(self.marker_prefix + ":")  # not a study whose name extends ours
        remote = getattr(self.executor, "recover", None)  # e.g. runs left on Ray nodes
        if remote is not None:
            killed += remote(self.marker_prefix + ":")
        if killed:
            self.view.message(f"recovery: killed {killed} orphaned process(es) of an earlier run")
        for lock in self.ws.clean_stale_locks():
            self.view.message(f"recovery: removed stale {lock.name}")
        self._pending = []
        for row in self.ledger.undecided():
            if row["n"] == 0:
                continue  # the baseline is re-measured by _baseline
            self._pending.append(row)
            self.ledger.event("resume", experiment=row["n"], state=row["state"])
        keep = self.ledger.last_keep()
        head = self.ws.branch_head()
        if keep is not None and keep.commit and head != keep.commit:
            # The keep was recorded but the branch move did not happen (or the user moved it).
            self.ws.set_branch(keep.commit)
            self.view.message(
                f"recovery: branch {self.ws.branch} reset to experiment "
                f"{keep.experiment} ({keep.commit[:7]})"
            )

    # == the baseline =======================================================================

    def _baseline(self) -> None:
        base = self.ledger.get(0)
        if base is not None and base.status == "keep":
            self._load_best()
            return
        if base is None:
            head = self.ws.branch_head()
            if head is not None and head != self.start_commit:
                raise UsageError(
                    f"branch {self.ws.branch} already exists and is not part of this study; "
                    f"delete it (`git branch -D {self.ws.branch}`) or choose another "
                    "[study].name"
                )
            self.ledger.add_proposed(0, parent="", description="baseline", proposer="baseline")
        self.ledger.set_meta("start_commit", self.start_commit)
        self.ledger.set_meta("metric", f"{self.cfg.metric.name}:{self.cfg.metric.goal}")
        if self.ledger.get_meta("started_at") is None:
            self.ledger.set_meta("started_at", str(time.time()))
        self.ledger.set_state(0, "applied", commit=self.start_commit, parent=None)
        self.ws.set_experiment_ref(0, self.start_commit)
        self._started(0, "baseline")
        reports = self.measure.measure(0, self.start_commit)
        verdict = self.measure.failure(reports)
        if verdict is not None:
            self.ledger.set_state(0, "aborted", reason=verdict.reason)
            raise OvernightError(
                f"the baseline failed ({verdict.status}): {verdict.reason}\n"
                f"logs: {self.study.exp_dir(0)}\nFix the run so the unchanged code produces "
                f"the metric {self.cfg.metric.name!r}, then run again."
            )
        value, metrics, wall = self.measure.aggregate(reports)
        self.decider.baseline(self.start_commit, reports)
        self.ledger.decide(0, "keep", "baseline", value, metrics, wall)
        self.ws.set_branch(self.start_commit)
        self._load_best()
        self._after_decision(0)

    def _load_best(self) -> None:
        keep = self.ledger.last_keep()
        assert keep is not None and keep.commit
        self.best = keep
        self.best_files = self.ws.read_files(keep.commit, self.surface)
        self.best_hash = surface_hash(self.best_files)

    # == one experiment =====================================================================

    def maybe_remeasure(self, slot: int) -> None:
        """Periodic re-measurement of the best (drift), by one slot at a time."""
        if not self.cfg.metric.remeasure_every or not self._remeasuring.acquire(blocking=False):
            return
        try:
            with self.lock:
                best, n = self.best, self.ledger.next_number()
            if note := self.tools[slot][1].maybe_remeasure(best, n):
                self.view.message(note)
        finally:
            self._remeasuring.release()

    def _resume_experiment(self, row: dict[str, Any]) -> ExperimentRecord:
        """Finish an experiment a stopped controller left undecided, under its number."""
        n = row["n"]
        self.view.message(f"resuming experiment {n} (was {row['state']})")
        if row["commit_sha"] and row["parent"] == self.best.commit:
            self.ledger.clear_measurements(n)
            return self._run_candidate(n, row["commit_sha"], row["description"], 0)
        if row["commit_sha"]:
            files = self.ws.read_files(row["commit_sha"], self.surface)
        else:
            files = json.loads(row["files"]) if row["files"] else {}
        # Made on an older best (or never applied): carried over to the current best like a
        # proposal that was prepared ahead.
        proposal = Proposal(
            files=files, description=row["description"], rationale=row["rationale"],
            proposer=row["proposer"], meta=json.loads(row["meta"]),
            base_commit=row["parent"] or "",
        )  # fmt: skip
        self.ledger.clear_measurements(n)
        return self.try_proposal(proposal, 0, existing=n)

    def make_proposal(self) -> Proposal:
        """Ask the proposer, in a daemon thread so Ctrl-C never waits for a slow model."""
        with self.lock:
            ctx = self._context()
        box: dict[str, Any] = {}

        def work() -> None:
            try:
                box["p"] = self.proposer.propose(ctx)
            except Exception as exc:  # a proposer fault never stops the loop
                box["e"] = exc

        thread = threading.Thread(target=work, name="overnight-proposer", daemon=True)
        thread.start()
        self.view.proposing(self.ledger.next_number())
        while thread.is_alive():
            thread.join(0.1)
            if self.stop_event.is_set():
                raise Interrupted
        if "e" in box:
            exc = box["e"]
            proposal = Proposal(
                files={}, description="proposer error", proposer=self.proposer.name,
                invalid_reason=f"proposer failed: {type(exc).__name__}: {exc}",
            )  # fmt: skip
        else:
            proposal = box["p"]
        proposal.proposer = proposal.proposer or self.proposer.name
        proposal.base_commit = ctx.best_commit
        return proposal

    def _context(self) -> Context:
        return build_context(self.study, self.ledger, self.best, self.best_files, self.opts.seed)

    # == recording ==========================================================================

    def _record(
        self,
        n: int,
        verdict: Verdict,
        value: float | None,
        metrics: dict[str, float],
        wall_s: float | None,
        commit: str | None = None,
    ) -> ExperimentRecord:
        if verdict.status in ("crash", "timeout"):
            value = None  # a failed run has no result, whatever it printed before failing
        self.ledger.decide(n, verdict.status, verdict.reason, value, metrics, wall_s)
        if verdict.status == "keep" and commit:
            self.ws.set_branch(commit, expected_old=self.best.commit)
            self._load_best()
        return self._after_decision(n)

    def _after_decision(self, n: int) -> ExperimentRecord:
        self._account_time()
        drain = getattr(self.executor, "drain_events", None)  # e.g. Ray workers that died
        for name, fields in drain() if drain is not None else ():
            self.ledger.event(name, **fields)
        self.ledger.write_tsv(self.study.tsv_path, self.cfg.metric.name)
        rec = self.ledger.get(n)
        assert rec is not None
        if n > 0:
            try:
                self.proposer.observe(rec)
            except Exception as exc:  # learning is best-effort; never stop the loop
                self.view.message(f"proposer.observe failed: {exc}")
        self.view.decided(rec, status_of(self.study, self.ledger))
        return rec

    def _started(self, n: int, description: str) -> None:
        # Published for `status` and the dashboard, which read the ledger from other processes.
        current = {"experiment": n, "description": description, "started_at": time.time(),
                   "budget_s": self.cfg.study.budget}  # fmt: skip
        self.ledger.set_meta("current", json.dumps(current))
        self.view.experiment_started(n, description, self.cfg.study.budget)

    def _account_time(self) -> None:
        now = time.monotonic()
        total = float(self.ledger.get_meta("run_seconds", "0") or 0) + now - self._run_clock
        self._run_clock = now
        self.ledger.set_meta("run_seconds", f"{total:.3f}")

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

    # == stopping ===========================================================================

    def should_stop(self, started: int, streak: int, t0: float) -> str | None:
        o = self.opts
        if self.stop_event.is_set():
            return self.stop_reason or "stopped"
        if o.experiments is not None and started >= o.experiments:
            return f"ran {started} experiment(s) as asked"
        if o.hours is not None and time.monotonic() - t0 >= o.hours * 3600:
            return f"time limit of {o.hours:g} h reached"
        if o.patience is not None and streak >= o.patience:
            return f"no keep in the last {streak} experiments (patience {o.patience})"
        if o.max_cost is not None and self.ledger.total_cost() >= o.max_cost:
            return f"cost limit reached (${self.ledger.total_cost():.2f} of ${o.max_cost:.2f})"
        if o.max_cost is not None:
            # Stop BEFORE a call that could cross the cap: proposers that pay per call say
            # what the next one may cost at most (llm: its prompt and a max_tokens reply).
            estimate = getattr(self.proposer, "next_cost_estimate", None)
            spent, upcoming = self.ledger.total_cost(), float(estimate() if estimate else 0.0)
            if spent + upcoming > o.max_cost:
                return (
                    f"cost limit reached (${spent:.2f} spent of ${o.max_cost:.2f}; the next "
                    f"model call could cost up to ${upcoming:.2f})"
                )
        return None


def run_study(study: Study, options: RunOptions, view: View | None = None) -> RunSummary:
    return Loop(study, options, view).run()
