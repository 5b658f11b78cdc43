"""Keeps every experiment slot busy.

Feeder threads prepare proposals ahead (bounded look-ahead) while slot threads run
experiments, so a slot never waits for the model when the model is at least as fast as a
run, and the model never waits for a slot when it is slower. The scheduler knows nothing
of git or the ledger: it is given the few callables it needs.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from overnight.experiment.measure import Interrupted
from overnight.store.records import ExperimentRecord, Proposal

FEEDER_GRACE = 30.0  # seconds a feeder may take to give up a proposal at the end


@dataclass
class Tally:
    started: int = 0
    ran: int = 0
    kept: int = 0
    streak: int = 0  # decided experiments in a row without a keep


@dataclass
class Jobs:
    """What the scheduler may call."""

    propose: Callable[[], Proposal]  # may raise Interrupted
    run: Callable[[Proposal, int], ExperimentRecord]  # (proposal, slot) -> decided record
    should_stop: Callable[[Tally], str | None]
    before_each: Callable[[int], None]  # slot -> None (e.g. re-measure the best for drift)
    stopping: threading.Event  # set when a stop was requested (Ctrl-C, SIGTERM)
    concurrent: bool = False  # the proposer may be called from several threads at once
    # Set by the scheduler once no more proposals are wanted: a `propose` still making one
    # should give up (raise Interrupted), since the night's records are about to close.
    over: threading.Event = field(default_factory=threading.Event)


class Scheduler:
    def __init__(self, jobs: Jobs, slots: int, lookahead: int, tally: Tally | None = None) -> None:
        self.jobs = jobs
        self.slots = max(1, slots)
        self.lookahead = max(0, lookahead)
        self.tally = tally or Tally()
        self.lock = threading.Lock()
        self.why: str | None = None
        self.done = jobs.over
        self.ready: queue.Queue[Proposal] = queue.Queue(maxsize=max(1, self.lookahead))
        self.room = threading.Lock()
        self.inflight = 0  # proposals being made right now
        self.proposing = threading.Lock()  # serial mode: one slot asks the model at a time
        self.error: BaseException | None = None

    def run(self) -> str | None:
        """Run until a stop condition; returns why it stopped (None: interrupted)."""
        threads = [
            threading.Thread(target=self._slot, args=(i,), name=f"overnight-slot-{i}")
            for i in range(self.slots)
        ]
        # A proposer that may be called from several threads at once (a model API) gets a
        # feeder per look-ahead slot, so N slots are kept busy by a model slower than a run.
        count = self.lookahead if self.jobs.concurrent else 1
        feeders = [
            threading.Thread(target=self._feed, name=f"overnight-feeder-{i}", daemon=True)
            for i in range(count if self.lookahead else 0)
        ]
        for t in feeders + threads:
            t.start()
        # The main thread only waits, so Ctrl-C / SIGTERM handlers run promptly.
        while any(t.is_alive() for t in threads):
            for t in threads:
                t.join(0.1)
        self.done.set()
        # A feeder may be making a proposal nobody will run: it gives up when it sees `done`
        # (see Jobs.over), and the night's records close only after it has left.
        for t in feeders:
            t.join(FEEDER_GRACE)
        if self.error is not None:
            raise self.error
        return self.why

    # -- proposals --------------------------------------------------------------------------

    def _stopping(self) -> bool:
        return self.done.is_set() or self.jobs.stopping.is_set()

    def _feed(self) -> None:
        """Prepare the next proposal whenever the look-ahead queue has room."""
        while not self._stopping():
            with self.room:
                if self.ready.qsize() + self.inflight >= self.lookahead:
                    wait = True
                else:
                    wait, self.inflight = False, self.inflight + 1
            if wait:
                time.sleep(0.005)
                continue
            try:
                proposal = self.jobs.propose()
            except Interrupted:
                return
            except BaseException as exc:  # a bug, not a proposer fault: surface it
                self.error = self.error or exc
                self.done.set()
                return
            finally:
                with self.room:
                    self.inflight -= 1
            while not self.done.is_set():
                try:
                    self.ready.put(proposal, timeout=0.1)
                    break
                except queue.Full:
                    continue

    def _next(self) -> Proposal | None:
        if not self.lookahead:
            with self.proposing:
                if self.done.is_set():
                    return None
                return self.jobs.propose()
        while not self._stopping():
            try:
                return self.ready.get(timeout=0.05)
            except queue.Empty:
                continue
        if self.jobs.stopping.is_set():
            raise Interrupted
        return None

    # -- slots ------------------------------------------------------------------------------

    def _slot(self, slot: int) -> None:
        while True:
            with self.lock:
                t = self.tally
                why = self.why or self.jobs.should_stop(t)
                if why is not None:
                    # No new experiments; the other slots finish the ones they hold.
                    self.why = why
                    return
                t.started += 1
            try:
                self.jobs.before_each(slot)
                proposal = self._next()
                if proposal is None:
                    return
                rec = self.jobs.run(proposal, slot)
            except Interrupted:
                self.done.set()
                return
            except BaseException as exc:  # surfaces in the main thread, which re-raises it
                self.error = self.error or exc
                self.done.set()
                return
            with self.lock:
                t.ran += 1
                keep = rec.status == "keep"
                t.kept += keep
                t.streak = 0 if keep else t.streak + 1
