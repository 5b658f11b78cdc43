"""The night: set up, recover what a killed controller left, measure the baseline, resume
interrupted experiments, then let the scheduler keep every slot busy until a stop.

The loop owns the state (the recorder: ledger, branch, best) and hands the scheduler the
few callables it needs: propose, run one candidate through the pipeline, should we stop.
Every state transition is written before the side effect that follows it, so `kill -9` at
any moment is recoverable.
"""

from __future__ import annotations

import json
import signal
import sqlite3
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from overnight.errors import FlagSource, OvernightError, UsageError
from overnight.executors.registry import make_executor
from overnight.experiment import stopping
from overnight.experiment.context import build_context
from overnight.experiment.controls import ControlSchedule, make_control
from overnight.experiment.measure import Interrupted, Measurer, aggregate
from overnight.experiment.pipeline import Pipeline
from overnight.experiment.recorder import Recorder
from overnight.experiment.reference import remeasure
from overnight.experiment.scheduler import Jobs, Scheduler, Tally
from overnight.experiment.setup import prepare_runs
from overnight.experiment.view import NullView, View
from overnight.git.checkout import check_checkout, checkout_state
from overnight.isolation.runner import kill_marked
from overnight.judging.rules import Verdict
from overnight.judging.verdict import HoldoutRecord, VerdictRecord
from overnight.proposers.admit import admit, admit_files
from overnight.proposers.base import BaseProposer
from overnight.proposers.registry import load_proposer
from overnight.store.ledger import Ledger
from overnight.store.lock import study_lock
from overnight.store.records import ExperimentRecord, Proposal
from overnight.store.study import Study, status_of
from overnight.values import parse_size


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
    allow_dirty: bool = False  # run the committed versions of files changed in the checkout


@dataclass
class RunSummary:
    stopped_because: str
    ran: int = 0
    kept: int = 0
    interrupted: bool = False
    status: dict[str, Any] = field(default_factory=dict)
    stopped_by: str = stopping.LIMIT  # limit | breaker | signal (stopping.py)
    signal: int | None = None  # SIGINT or SIGTERM that stopped it


class Loop:
    def __init__(self, study: Study, options: RunOptions, view: View | None = None,
                 executor: Any = None, proposer: BaseProposer | None = None) -> None:  # fmt: skip
        self.study = study
        self.cfg = study.cfg
        self.opts = options
        self.view = view or NullView()
        self.ws = study.ws
        self.stop_event = threading.Event()
        self._over = threading.Event()  # the scheduler wants no more proposals (Jobs.over)
        self.stop_reason = ""
        self.stop_signal: int | None = None
        self.breakers = stopping.Breakers(study.cfg.stop)
        self._stopped_by = stopping.LIMIT
        self._t0, self._tally = time.monotonic(), Tally()
        self._executor = executor  # an executor given by the caller (tests: FakeExecutor)
        self._proposer = proposer  # a proposer given by the caller (`overnight mcp`: the agent)

    # == the whole run ======================================================================

    def run(self) -> RunSummary:
        with study_lock(self.study.state_dir, self.study.name):
            self._setup()
            previous = self._install_signals()
            try:
                self._recover()
                self._baseline()
                tally = self._tally = Tally()
                for row in self._pending:
                    if self.stop_event.is_set():
                        break
                    rec = self._resume(row)
                    # A resumed experiment counts towards --experiments like a new one.
                    tally.started += 1
                    tally.ran += 1
                    tally.kept += rec.status == "keep"
                self._t0 = time.monotonic()
                self.controls = ControlSchedule(self.cfg.judge.controls, self.opts.seed,
                                                (self.rec._next or 1) - 1)  # fmt: skip
                lookahead = self.slots if self.opts.lookahead is None else self.opts.lookahead
                self._over = threading.Event()
                jobs = Jobs(
                    propose=self.propose, run=self._run_one, should_stop=self.should_stop,
                    before_each=self._before_each, stopping=self.stop_event,
                    concurrent=bool(getattr(self.proposer, "concurrent", False)),
                    over=self._over,
                )  # fmt: skip
                sched = Scheduler(jobs, self.slots, lookahead, tally)
                why = sched.run()
                summary = RunSummary(why or self.stop_reason or "stopped", tally.ran, tally.kept,
                                     interrupted=why is None or self.stop_event.is_set())
            except Interrupted:
                summary = RunSummary(self.stop_reason or "interrupted", interrupted=True)
            except OvernightError as exc:  # e.g. the baseline failed: status says why
                stopping.record_stop(self.ledger, str(exc).splitlines()[0], stopping.ERROR)
                raise
            finally:
                self._restore_signals(previous)
                self._teardown()
            summary.signal = self.stop_signal
            summary.stopped_by = stopping.SIGNAL if summary.signal is not None else self._stopped_by
            stopping.record_stop(self.ledger, summary.stopped_because, summary.stopped_by)
            summary.status = status_of(self.study, self.ledger)
            self.view.finished(summary.stopped_because, summary.status)
            self.ledger.close()
            return summary

    # == set-up and recovery ================================================================

    def _setup(self) -> None:
        cfg = self.cfg
        # Validate everything before the first write, so a usage error changes nothing.
        fresh = not self.study.ledger_path.exists()
        ledger = Ledger(self.study.ledger_path, readonly=True) if not fresh else None
        start = old_metric = None
        try:
            if ledger is not None:
                start, old_metric = ledger.get_meta("start_commit"), ledger.get_meta("metric")
                if ledger.last_keep() is None:
                    start = None
        except sqlite3.OperationalError:  # killed while creating the ledger: no tables yet
            start = old_metric = None
        finally:
            if ledger is not None:
                ledger.close()
        if start is None:
            start = self.ws.user_head()
        elif not self.ws.commit_exists(start):
            raise UsageError(
                f"study {self.study.name!r} started at commit {start[:12]}, which no longer "
                "exists in this repository; start a new study with another [study].name"
            )
        self.start_commit = start
        signature = f"{cfg.metric.name}:{cfg.metric.goal}"
        if old_metric is not None and old_metric != signature:
            raise UsageError(
                f"{cfg.path.name}: [metric] changed from {old_metric!r} to {signature!r} since "
                f"study {self.study.name!r} began; verdicts would not be comparable. Use a new "
                "[study].name for the new metric."
            )
        setup = prepare_runs(self.study, start)
        settings = [cfg.path, self.study.root / cfg.study.instructions]
        dirty = check_checkout(checkout_state(self.study.root, start, self.ws.branch, settings),
                               self.study.name, self.opts.allow_dirty)  # fmt: skip
        self.surface, self.marker_prefix = setup.surface, setup.marker_prefix
        with FlagSource("--executor", self.opts.executor, "[executor].kind"):
            self.executor = self._executor or make_executor(
                self.opts.executor or cfg.executor.kind, cfg, self.ws, self.surface,
                setup.protected, workers=self.opts.workers, sandbox=setup.sandbox,
            )  # fmt: skip
        self.proposer: BaseProposer
        if self._proposer is not None:
            self.proposer, why = self._proposer, f"proposer: {self._proposer.describe()}"
        else:
            with FlagSource("--proposer", self.opts.proposer, "[proposer].kind"):
                self.proposer, why = load_proposer(self.opts.proposer or cfg.proposer.kind,
                                                   cfg, seed=self.opts.seed)  # fmt: skip
        self.ws.ensure_excluded()
        self.ledger = Ledger(self.study.ledger_path)
        stopping.clear_stop(self.ledger)
        self.rec = Recorder(self.study, self.ledger, self.ws, self.surface)
        self.slots = max(1, getattr(self.executor, "slots", 1))
        base = Measurer(cfg, self.executor, self.surface, setup.base_env, self.opts.seed,
                        self.marker_prefix, self.study.exp_dir, self.rec,
                        lambda: self.stop_reason)  # fmt: skip
        self.measurers = [base.for_slot(i) for i in range(self.slots)]
        self.pipeline = Pipeline(cfg, self.rec, self.measurers, self.ws, self.surface,
                                 self._rebase, self.view)  # fmt: skip
        self._remeasuring = threading.Lock()
        self.view.message(why)
        if dirty:
            self.view.message(dirty)

    def _install_signals(self) -> dict[int, Any]:
        if threading.current_thread() is not threading.main_thread():
            return {}
        previous = {}

        def handler(signum: int, _frame: Any) -> None:
            if self.stop_event.is_set():
                raise KeyboardInterrupt  # second Ctrl-C: stop waiting for the cleanup
            self.stop_reason = f"stopped by {signal.Signals(signum).name}"
            self.stop_signal = signum
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
        self.rec.account_time()
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
        self.rec.load()

    # == the baseline =======================================================================

    def _baseline(self) -> None:
        base = self.ledger.get(0)
        if base is not None and base.status == "keep":
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
            self.rec.next_number()
        self.ledger.set_meta("start_commit", self.start_commit)
        self.ledger.set_meta("metric", f"{self.cfg.metric.name}:{self.cfg.metric.goal}")
        if self.ledger.get_meta("started_at") is None:
            self.ledger.set_meta("started_at", str(time.time()))
        self.ledger.clear_measurements(0)
        self.rec.applied(0, self.start_commit, "")
        self.rec.started(0, "baseline")
        self.view.experiment_started(0, "baseline", self.cfg.study.budget)
        m = self.measurers[0]
        runs = m.measure(0, self.start_commit)
        failed = next((r for r in runs if r.status is not None), None)
        if failed is not None:
            self.rec.aborted(0, failed.error or failed.status or "failed")
            raise OvernightError(
                f"the baseline failed ({failed.status}): {failed.error}\n"
                f"logs: {self.study.exp_dir(0)}\nFix the run so the unchanged code produces "
                f"the metric {self.cfg.metric.name!r}, then run again."
            )
        record = VerdictRecord("baseline", candidate=[r.id for r in runs])
        if self.cfg.holdout.command:
            run = m.measure_holdout(0, self.start_commit)
            if run.value is None:
                self.rec.aborted(0, f"holdout failed: {run.error}")
                raise OvernightError(
                    f"the holdout failed on the baseline: {run.error}\nlogs: "
                    f"{self.study.exp_dir(0)}\nFix [holdout].command so it prints "
                    f"{self.cfg.holdout.name!r} for the unchanged code, then run again."
                )
            record.holdout = HoldoutRecord(ids=[run.id])
        value, metrics, wall = aggregate(runs)
        rec = self.rec.verdict(0, Verdict("keep", "baseline"), record, value, metrics, wall,
                               commit=self.start_commit, isolation=runs[0].facts.isolation)
        self._after(rec)

    # == one experiment =====================================================================

    def propose(self) -> Proposal:
        """Ask the proposer, in a daemon thread so Ctrl-C never waits for a slow model; or,
        when the schedule says so, hand out a control without asking it."""
        if self.controls.next_is_control():
            return make_control()
        with self.rec.lock:
            ctx = self._context()
            upcoming = self.rec._next or 0
        box: dict[str, Any] = {}

        def work() -> None:
            try:
                box["p"] = self.proposer.propose(ctx)
            except Exception as exc:  # a proposer fault never stops the loop
                box["e"] = exc

        thread = threading.Thread(target=work, name="overnight-proposer", daemon=True)
        thread.start()
        self.view.proposing(upcoming)
        while thread.is_alive():
            thread.join(0.1)
            if self.stop_event.is_set() or self._over.is_set():
                raise Interrupted  # the proposer's answer, if it comes, is dropped
        if self._over.is_set():
            raise Interrupted
        if "e" in box:
            exc = box["e"]
            box["p"] = Proposal(
                files={}, description="proposer error", proposer=self.proposer.name,
                invalid_reason=f"proposer failed: {type(exc).__name__}: {exc}",
            )  # fmt: skip
        # Well-formed, encodable and within the caps before anything records it.
        proposal = admit(box.get("p"), ctx.surface, parse_size(self.cfg.study.max_surface),
                         self.proposer.name)  # fmt: skip
        proposal.proposer = proposal.proposer or self.proposer.name
        # What the change was made on: the context's best, unless the proposer knows better
        # (a submission waited for is made on the best of the moment it arrived).
        proposal.base_commit = proposal.base_commit or ctx.best_commit
        self.rec.waiting(proposal)
        return proposal

    def _rebase(self, proposal: Proposal, best: dict[str, str]) -> dict[str, str] | None:
        """The proposer's own re-application of its change; a fault in it falls back to the
        three-way merge instead of stopping the night before the proposal is recorded."""
        try:
            files = self.proposer.rebase(proposal, best)
        except Exception as exc:  # noqa: BLE001 - proposer code
            self.view.message(f"proposer.rebase failed: {type(exc).__name__}: {exc}")
            return None
        return None if files is None else admit_files(files)

    def _context(self) -> Any:
        best = self.rec.best
        assert best is not None
        # Controls are not the proposer's: it never sees them (nor learns from them).
        history = self.rec.proposer_history
        running = {n: d for n, d in self.rec.running.items() if n not in self.rec.controls}
        left = stopping.remaining(self.opts, self._tally, time.monotonic() - self._t0,
                                  self.rec.tallies.cost_usd)  # fmt: skip
        return build_context(self.study, history, best.record, best.files,
                             self.opts.seed, running, self.rec.queued, left,
                             self.rec.last_failure)  # fmt: skip

    def _run_one(self, proposal: Proposal, slot: int) -> ExperimentRecord:
        return self._after(self.pipeline.run(proposal, slot))

    def _resume(self, row: dict[str, Any]) -> ExperimentRecord:
        """Finish an experiment a stopped controller left undecided, under its number."""
        n = row["n"]
        self.view.message(f"resuming experiment {n} (was {row['state']})")
        self.ledger.clear_measurements(n)
        best = self.rec.best
        assert best is not None
        if row["control_of"] is not None:  # a control: of the best as it is now
            return self._after(self.pipeline.run(make_control(), 0, existing=n))
        if row["commit_sha"] and row["parent"] == best.commit:
            desc = Proposal(files={}, description=row["description"])
            return self._after(self.pipeline.evaluate(n, row["commit_sha"], desc, best, 0))
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
        return self._after(self.pipeline.run(proposal, 0, existing=n))

    def _after(self, rec: ExperimentRecord) -> ExperimentRecord:
        """What follows every verdict: executor events into the ledger, the proposer learns,
        the view shows it."""
        drain = getattr(self.executor, "drain_events", None)  # e.g. Ray workers that died
        for name, fields in drain() if drain is not None else ():
            self.ledger.event(name, **fields)
        self.breakers.observe(rec)
        if rec.experiment > 0 and rec.control_of is None:
            try:
                self.proposer.observe(rec)
            except Exception as exc:  # learning is best-effort; never stop the loop
                self.view.message(f"proposer.observe failed: {exc}")
        self.view.decided(rec, self.rec.summary())
        return rec

    def _before_each(self, slot: int) -> None:
        """Periodic re-measurement of the best (drift), by one slot at a time."""
        every = self.cfg.metric.remeasure_every
        if not every or not self._remeasuring.acquire(blocking=False):
            return
        try:
            with self.rec.lock:
                best, n = self.rec.best, self.rec._next or 0
            assert best is not None
            note = remeasure(self.ledger, self.measurers[slot], best.record, n, every,
                             self.cfg.metric.alpha)  # fmt: skip
            if note:
                self.view.message(note)
        finally:
            self._remeasuring.release()

    # == stopping ===========================================================================

    def should_stop(self, tally: Tally) -> str | None:
        if self.stop_event.is_set():
            return self.stop_reason or "stopped"
        if self.breakers.tripped is not None:
            self._stopped_by = stopping.BREAKER
            return f"stopped by a circuit breaker: {self.breakers.tripped}"
        estimate = getattr(self.proposer, "next_cost_estimate", None)
        return stopping.limit_reached(self.opts, tally, time.monotonic() - self._t0,
                                      self.rec.tallies.cost_usd, estimate)  # fmt: skip


def run_study(study: Study, options: RunOptions, view: View | None = None) -> RunSummary:
    return Loop(study, options, view).run()
