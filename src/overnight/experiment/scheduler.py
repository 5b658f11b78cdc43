"""Keeps every experiment slot busy.

A proposer thread prepares proposals ahead (bounded look-ahead) while slot threads run
experiments, so a slot never waits for the model when the model is at least as fast as a
run, and the model never waits for a slot when it is slower. The controller stays the only
writer: slot threads do their git and ledger bookkeeping under the loop's lock, and only
the runs themselves happen outside it.
"""

from __future__ import annotations

import queue
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from overnight.experiment.measure import Interrupted
from overnight.store.records import Proposal

if TYPE_CHECKING:
    from overnight.experiment.loop import Loop


@dataclass
class Tally:
    started: int = 0
    ran: int = 0
    kept: int = 0
    streak: int = 0  # decided experiments in a row without a keep


class Scheduler:
    def __init__(self, loop: Loop, slots: int, lookahead: int, t0: float) -> None:
        self.loop = loop
        self.slots = max(1, slots)
        self.lookahead = max(0, lookahead)
        self.t0 = t0
        self.tally = Tally()
        self.why: str | None = None
        self.done = threading.Event()
        self.ready: queue.Queue[Proposal] = queue.Queue(maxsize=max(1, self.lookahead))
        self.room = threading.Lock()
        self.inflight = 0  # proposals being made right now
        self.proposing = threading.Lock()  # serial mode: one slot asks the model at a time
        self.busy_s = 0.0  # summed slot time spent on experiments (utilization)
        self.error: BaseException | None = None

    def run(self) -> str:
        threads = [
            threading.Thread(target=self._slot, args=(i,), name=f"overnight-slot-{i}")
            for i in range(self.slots)
        ]
        # A proposer that may be called from several threads at once (a model API) gets a
        # feeder per look-ahead slot, so N slots are kept busy by a model slower than a run.
        feeders = self.lookahead if getattr(self.loop.proposer, "concurrent", False) else 1
        for i in range(feeders if self.lookahead else 0):
            threading.Thread(target=self._feed, name=f"overnight-feeder-{i}", daemon=True).start()
        for t in threads:
            t.start()
        # The main thread only waits, so Ctrl-C / SIGTERM handlers run promptly.
        while any(t.is_alive() for t in threads):
            for t in threads:
                t.join(0.1)
        self.done.set()
        if self.error is not None:
            raise self.error
        return self.why or self.loop.stop_reason or "stopped"

    # -- proposals --------------------------------------------------------------------------

    def _feed(self) -> None:
        """Prepare the next proposal whenever the look-ahead queue has room."""
        while not self.done.is_set() and not self.loop.stop_event.is_set():
            with self.room:
                if self.ready.qsize() + self.inflight >= self.lookahead:
                    wait = True
                else:
                    wait, self.inflight = False, self.inflight + 1
            if wait:
                time.sleep(0.005)
                continue
            try:
                proposal = self.loop.make_proposal()
            except Interrupted:
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
                return self.loop.make_proposal()
        while not self.done.is_set() and not self.loop.stop_event.is_set():
            try:
                return self.ready.get(timeout=0.05)
            except queue.Empty:
                continue
        if self.loop.stop_event.is_set():
            raise Interrupted
        return None

    # -- slots ------------------------------------------------------------------------------

    def _slot(self, slot: int) -> None:
        loop = self.loop
        while True:
            with loop.lock:
                t = self.tally
                why = self.why or loop.should_stop(t.started, t.streak, self.t0)
                if why is not None:
                    # No new experiments; the other slots finish the ones they hold.
                    self.why = why
                    return
                t.started += 1
            try:
                loop.maybe_remeasure(slot)
                proposal = self._next()
                if proposal is None:
                    return
                t0 = time.monotonic()
                rec = loop.try_proposal(proposal, slot)
                self.busy_s += time.monotonic() - t0
            except Interrupted:
                self.done.set()
                return
            except BaseException as exc:  # surfaces in the main thread, which re-raises it
                self.error = self.error or exc
                self.done.set()
                return
            with loop.lock:
                t.ran += 1
                keep = rec.status == "keep"
                t.kept += keep
                t.streak = 0 if keep else t.streak + 1
