"""Where an agent's submissions wait for the loop (`overnight mcp`).

The agent hands candidates in through the MCP tools; the loop's proposer, `DeskProposer`,
takes them one at a time, exactly as any proposer returns a proposal; the loop then numbers,
runs and decides them through the same pipeline and recorder as every other experiment, and
the desk tells the waiting tool call the number and the verdict. The desk holds no git or
ledger handle: proposals go in, decided records come out.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from overnight.errors import UsageError
from overnight.proposers.base import BaseProposer, Context
from overnight.store.records import ExperimentRecord, Proposal

# The key of a proposal's `meta` (stored in the ledger row) that names its submission.
SUBMISSION_KEY = "submission"


@dataclass
class Submission:
    proposal: Proposal
    id: str = field(default_factory=lambda: uuid.uuid4().hex)
    experiment: int | None = None  # set when the loop numbers it
    started: float | None = None  # when its runs began
    record: ExperimentRecord | None = None  # set when it is decided
    ended: str = ""  # why it gets no verdict in this session

    @property
    def done(self) -> bool:
        return self.record is not None or bool(self.ended)


class SubmissionDesk:
    """Submissions between the tools and the loop: at most `capacity()` open at once (the
    study's slots), taken in the order they came."""

    def __init__(self, capacity: Callable[[], int]) -> None:
        self.capacity = capacity
        self._cond = threading.Condition()
        self._queue: deque[Submission] = deque()
        self._open: dict[str, Submission] = {}  # handed in, not yet decided or ended
        self._refusing = ""  # why new submissions are refused (empty: accepted)
        self.ready = threading.Event()  # the loop has asked for a proposal
        self.ready_at: float | None = None

    # -- the tools' side ------------------------------------------------------------------

    def hand_in(self, proposal: Proposal) -> Submission:
        with self._cond:
            if self._refusing:
                raise UsageError(self._refusing)
            slots = max(1, self.capacity())
            if len(self._open) >= slots:
                taken = sorted(s.experiment for s in self._open.values()
                               if s.experiment is not None)  # fmt: skip
                which = f" (experiment {', '.join(map(str, taken))})" if taken else ""
                raise UsageError(
                    f"all {slots} experiment slot(s) are taken by earlier submissions{which}; "
                    "wait for a verdict (submit with wait=true, or poll show) before submitting "
                    "another"
                )
            sub = Submission(proposal)
            proposal.meta[SUBMISSION_KEY] = sub.id
            self._open[sub.id] = sub
            self._queue.append(sub)
            self._cond.notify_all()
            return sub

    def wait(self, sub: Submission, numbered: bool, timeout: float) -> bool:
        """Block until `sub` is numbered (or decided, with `numbered` False), or it ended;
        True when that happened within `timeout` seconds."""

        def reached() -> bool:
            return sub.done or (numbered and sub.experiment is not None)

        with self._cond:
            return self._cond.wait_for(reached, timeout)

    def outstanding(self) -> int:
        with self._cond:
            return len(self._open)

    def queued(self) -> int:
        with self._cond:
            return sum(1 for s in self._open.values() if s.experiment is None)

    def refuse(self, why: str) -> None:
        """Accept no new submission from now on (those handed in go on)."""
        with self._cond:
            self._refusing = self._refusing or why

    @property
    def refusing(self) -> str:
        return self._refusing

    def end(self, why: str) -> None:
        """The loop is over: every open submission gets its ending, new ones are refused."""
        with self._cond:
            self._refusing = self._refusing or f"the session is over: {why}"
            for sub in self._open.values():
                if sub.experiment is None:
                    sub.ended = f"the session ended before it ran ({why}); nothing was recorded"
                else:
                    sub.ended = (
                        f"interrupted ({why}): experiment {sub.experiment} is left undecided and "
                        "is re-run, under its number, when the study resumes"
                    )
            self._open.clear()
            self._queue.clear()
            self._cond.notify_all()

    # -- the loop's side ------------------------------------------------------------------

    def take(self) -> Submission:
        """The next submission, waiting for one (the loop stops waiting on its own)."""
        with self._cond:
            if not self.ready.is_set():
                self.ready_at = time.monotonic()
                self.ready.set()
            self._cond.wait_for(lambda: bool(self._queue))
            return self._queue.popleft()

    def numbered(self, n: int, submission: str | None) -> None:
        with self._cond:
            sub = self._open.get(submission or "")
            if sub is not None and sub.experiment is None:
                sub.experiment, sub.started = n, time.monotonic()
                self._cond.notify_all()

    def decided(self, rec: ExperimentRecord) -> None:
        with self._cond:
            sub = self._open.pop(str(rec.meta.get(SUBMISSION_KEY, "")), None)
            if sub is not None:
                sub.experiment, sub.record = rec.experiment, rec
                self._cond.notify_all()


class DeskProposer(BaseProposer):
    """The proposer of an `overnight mcp` session: what the agent submitted, in order."""

    name = "mcp"
    # Each look-ahead feeder waits at the desk, so as many submissions as there are slots
    # run at once.
    concurrent = True

    def __init__(self, desk: SubmissionDesk) -> None:
        self.desk = desk

    def propose(self, ctx: Context) -> Proposal:
        return self.desk.take().proposal

    def describe(self) -> str:
        return "mcp (candidates submitted by a coding agent through `overnight mcp`)"
