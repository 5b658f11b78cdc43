"""The scheduler alone (experiment/scheduler.py): slots and run-ahead with plain callables,
no git and no processes. Orderings are forced with events and barriers, never with sleeps."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

import pytest

from overnight.experiment.measure import Interrupted
from overnight.experiment.scheduler import Jobs, Scheduler, Tally
from overnight.store.records import ExperimentRecord, Proposal

WAIT = 30  # seconds a forced ordering may take before the test fails (never reached)


def record(n: int, status: str = "discard") -> ExperimentRecord:
    return ExperimentRecord(n, status, 1.0, {}, None, None, "", "", 0.0, "test")


@dataclass
class Script:
    """Callables for the scheduler that log what happened, in order."""

    experiments: int
    events: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    proposed: int = 0
    running: int = 0
    most_running: int = 0
    stopping: threading.Event = field(default_factory=threading.Event)
    statuses: dict[int, str] = field(default_factory=dict)

    def log(self, what: str) -> None:
        with self.lock:
            self.events.append(what)

    def propose(self) -> Proposal:
        with self.lock:
            self.proposed += 1
            k = self.proposed
            self.events.append(f"propose {k}")
        return Proposal(files={"f": str(k)}, description=str(k))

    def run(self, proposal: Proposal, slot: int) -> ExperimentRecord:
        n = int(proposal.description)
        with self.lock:
            self.running += 1
            self.most_running = max(self.most_running, self.running)
            self.events.append(f"start {n}")
        try:
            self.during(n, slot)
        finally:
            with self.lock:
                self.running -= 1
                self.events.append(f"end {n}")
        return record(n, self.statuses.get(n, "discard"))

    def during(self, n: int, slot: int) -> None:  # overridden per test
        pass

    def should_stop(self, tally: Tally) -> str | None:
        return "enough" if tally.started >= self.experiments else None

    def jobs(self, concurrent: bool = False) -> Jobs:
        return Jobs(propose=self.propose, run=self.run, should_stop=self.should_stop,
                    before_each=lambda slot: None, stopping=self.stopping,
                    concurrent=concurrent)  # fmt: skip


def test_every_experiment_runs_once_and_the_tally_adds_up() -> None:
    script = Script(experiments=7)
    script.statuses = {3: "keep", 6: "keep"}
    tally = Tally()
    why = Scheduler(script.jobs(), slots=2, lookahead=2, tally=tally).run()
    assert why == "enough"
    started = sorted(int(e.split()[1]) for e in script.events if e.startswith("start"))
    assert started == list(range(1, 8))
    assert tally.started == tally.ran == 7 and tally.kept == 2
    # Proposals made ahead but never run are at most the look-ahead.
    assert 7 <= script.proposed <= 7 + 2


def test_slots_run_at_the_same_time() -> None:
    barrier = threading.Barrier(3, timeout=WAIT)

    class Together(Script):
        def during(self, n: int, slot: int) -> None:
            if n <= 3:
                barrier.wait()  # passes only when three runs are in flight at once

    script = Together(experiments=6)
    assert Scheduler(script.jobs(), slots=3, lookahead=3).run() == "enough"
    assert script.most_running == 3


def test_the_next_proposal_is_made_while_a_run_is_in_flight() -> None:
    class Ahead(Script):
        def during(self, n: int, slot: int) -> None:
            # Run n ends only once proposal n + 1 exists: run-ahead must provide it.
            deadline = threading.Event()
            for _ in range(WAIT * 100):
                with self.lock:
                    if self.proposed >= n + 1:
                        return
                deadline.wait(0.01)
            raise AssertionError(f"proposal {n + 1} was not made while run {n} was in flight")

    script = Ahead(experiments=4)
    assert Scheduler(script.jobs(), slots=1, lookahead=1).run() == "enough"


def test_without_lookahead_the_proposer_waits_for_each_verdict() -> None:
    script = Script(experiments=5)
    Scheduler(script.jobs(), slots=1, lookahead=0).run()
    assert script.events == [e for k in range(1, 6)
                             for e in (f"propose {k}", f"start {k}", f"end {k}")]  # fmt: skip


def test_a_concurrent_proposer_gets_a_feeder_per_lookahead_slot() -> None:
    gate = threading.Barrier(3, timeout=WAIT)

    class Slow(Script):
        def propose(self) -> Proposal:
            with self.lock:
                first = self.proposed < 3
            proposal = super().propose()
            if first:
                gate.wait()  # three proposals are being made at once
            return proposal

    script = Slow(experiments=3)
    assert Scheduler(script.jobs(concurrent=True), slots=3, lookahead=3).run() == "enough"


def test_a_stop_request_ends_the_night_without_new_experiments() -> None:
    class Stopper(Script):
        def during(self, n: int, slot: int) -> None:
            if n == 2:
                self.stopping.set()
                raise Interrupted

    script = Stopper(experiments=50)
    assert Scheduler(script.jobs(), slots=1, lookahead=1).run() is None
    assert not any(e == "start 3" for e in script.events)


def test_a_bug_in_a_run_surfaces_in_the_caller() -> None:
    class Buggy(Script):
        def during(self, n: int, slot: int) -> None:
            if n == 2:
                raise KeyError("bug")

    with pytest.raises(KeyError, match="bug"):
        Scheduler(Buggy(experiments=10).jobs(), slots=2, lookahead=1).run()


def test_the_streak_counts_verdicts_without_a_keep() -> None:
    script = Script(experiments=6)
    script.statuses = {2: "keep"}
    tally = Tally()
    Scheduler(script.jobs(), slots=1, lookahead=0, tally=tally).run()
    assert tally.streak == 4 and tally.kept == 1
