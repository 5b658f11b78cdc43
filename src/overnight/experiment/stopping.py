"""When a night stops by itself, and why.

Asked before every new experiment (`Loop.should_stop`), after a Ctrl-C or SIGTERM:

- the circuit breakers of `[stop]` (`Breakers`), which end a night that went wrong while
  nobody watched, instead of filling the ledger and the disk with failures: the proposer
  can propose nothing at all; N experiments in a row could not be run or failed; the same
  failure K times in a row; too many failures over a sliding window. Each reason says what
  to fix. Breakers count from the start of each `overnight run`, so a fixed study resumes;
- the limits the user set for this `overnight run`: `--experiments`, `--hours`,
  `--patience`, `--max-cost` (`limit_reached`).

Every stop is stored (`record_stop`): an event `stopped` in the ledger and the meta
`stopped_because` that `status`, `status --json` and the report show.
"""

from __future__ import annotations

import json
import re
import threading
from collections import Counter, deque
from collections.abc import Callable
from typing import TYPE_CHECKING

from overnight.config import StopConfig
from overnight.proposers.base import NOTHING_TO_PROPOSE, Remaining
from overnight.store.records import ExperimentRecord
from overnight.store.status import STOPPED_META

if TYPE_CHECKING:
    from overnight.experiment.loop import RunOptions
    from overnight.experiment.scheduler import Tally
    from overnight.store.ledger import Ledger

# Statuses of an experiment that produced no measurement worth comparing.
FAILED = frozenset({"invalid", "rejected", "crash", "timeout"})

# How a night ended (RunSummary.stopped_by, `status --json`'s `stopped_by`).
LIMIT, BREAKER, SIGNAL, ERROR = "limit", "breaker", "signal", "error"

# What to look at for each kind of failure; {n} is the latest failed experiment.
_HINTS = {
    "crash": "the run fails on these candidates: read its log with `overnight show {n}`, then "
    "fix [run].command or what it needs",
    "timeout": "the runs hit the budget: raise [study].budget or make the run faster "
    "(`overnight show {n}`)",
    "rejected": "the candidates break the study's rules (files outside the surface, locked "
    "files, holdout): see `overnight show {n}`",
    "invalid": "the proposals could not be run: see `overnight show {n} --prompt` for what "
    "the proposer was asked and answered",
    "proposer": "the proposer itself fails: check [proposer] in overnight.toml "
    "(`overnight show {n} --prompt`)",
    "exhausted": "the proposer ran out of new values to try: add knobs or widen them, or use "
    "a proposer that edits code (--proposer llm or agent)",
    "check": "[check].command fails on the candidates: see `overnight show {n}`",
}

# Reasons of `invalid` experiments whose proposer itself failed (loop, llm, agent).
_PROPOSER_FAILED = ("proposer failed", "model call failed", "agent proposer failed",
                    "the agent exited", "the agent did not finish")  # fmt: skip
_HEX = re.compile(r"\b(?=[0-9a-f]*\d)[0-9a-f]{7,64}\b")
_PATH = re.compile(r"[\w.~+-]*(?:/[\w.~+-]*)+")
_NUMBER = re.compile(r"\d+(?:\.\d+)?(?:e[-+]?\d+)?", re.IGNORECASE)


def signature(status: str | None, reason: str) -> str:
    """What identifies a failure across experiments: the status and the reason with paths,
    commit ids and numbers replaced (`crash: run command exited with code # at <path>`)."""
    text = _PATH.sub("<path>", _HEX.sub("<id>", reason))
    text = _NUMBER.sub("#", text)
    return f"{status}: {' '.join(text.split())[:300]}"


def hint(rec: ExperimentRecord) -> str:
    """What to fix, judged from the latest failure."""
    key = rec.status or "invalid"
    if key == "invalid" and rec.reason.startswith("[check]"):
        key = "check"
    elif key == "invalid" and rec.reason.startswith(_PROPOSER_FAILED):
        key = "proposer"
    elif key == "invalid" and "no untried" in rec.reason:  # tune: its search space is spent
        key = "exhausted"
    return _HINTS.get(key, _HINTS["invalid"]).format(n=rec.experiment)


class Breakers:
    """The circuit breakers of `[stop]`, fed every decided experiment in decision order
    (from any slot thread); `tripped` holds the first reason, which stays."""

    def __init__(self, cfg: StopConfig) -> None:
        self.cfg = cfg
        self.tripped: str | None = None
        self._lock = threading.Lock()
        self._in_row: Counter[str] = Counter()  # statuses of the failures since a success
        self._same: list[str] = []  # signatures of the latest failures in a row, bounded
        self._window: deque[bool] = deque(maxlen=max(1, cfg.failure_window))

    def observe(self, rec: ExperimentRecord) -> str | None:
        if rec.experiment == 0 or rec.status is None:
            return self.tripped  # the baseline has its own rule: a failed one stops the run
        with self._lock:
            failed = rec.status in FAILED
            self._window.append(failed)
            if not failed:
                self._in_row.clear()
                self._same = []
            else:
                self._in_row[rec.status] += 1
                sig = signature(rec.status, rec.reason)
                same = self._same if self._same and self._same[-1] == sig else []
                self._same = [*same, sig][-max(1, self.cfg.max_same_failure):]
            if self.tripped is None:
                self.tripped = self._check(rec, failed)
            return self.tripped

    def _check(self, rec: ExperimentRecord, failed: bool) -> str | None:
        c = self.cfg
        if rec.meta.get(NOTHING_TO_PROPOSE):
            return f"the proposer can propose nothing for this study: {rec.reason}"
        if not failed:
            return None
        last = f"experiment {rec.experiment}: {rec.status}, {_short(rec.reason)}"
        if c.max_same_failure and len(self._same) >= c.max_same_failure:
            return (f"the last {len(self._same)} experiments failed the same way ({last}); "
                    f"{hint(rec)}")  # fmt: skip
        in_row = sum(self._in_row.values())
        if c.max_failures_in_row and in_row >= c.max_failures_in_row:
            mix = ", ".join(f"{k} {v}" for k, v in self._in_row.most_common())
            return (f"{in_row} experiments in a row failed ({mix}; the last, {last}); "
                    f"{hint(rec)}")  # fmt: skip
        window = self._window
        if c.failure_window and len(window) == c.failure_window:
            share = sum(window) / len(window)
            if share >= c.max_failure_share:
                return (f"{sum(window)} of the last {len(window)} experiments failed "
                        f"({share:.0%} >= [stop].max_failure_share {c.max_failure_share:g}; "
                        f"the last, {last}); {hint(rec)}")  # fmt: skip
        return None


def _short(text: str, limit: int = 240) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def limit_reached(
    opts: RunOptions, tally: Tally, elapsed_s: float, spent: float,
    next_cost: Callable[[], float] | None,
) -> str | None:  # fmt: skip
    """The first limit of this run that is reached, as the sentence the user reads."""
    o = opts
    if o.experiments is not None and tally.started >= o.experiments:
        return f"ran {tally.started} experiment(s) as asked"
    if o.hours is not None and elapsed_s >= o.hours * 3600:
        return f"time limit of {o.hours:g} h reached"
    if o.patience is not None and tally.streak >= o.patience:
        return f"no keep in the last {tally.streak} experiments (patience {o.patience})"
    if o.max_cost is not None and spent >= o.max_cost:
        return f"cost limit reached (${spent:.2f} of ${o.max_cost:.2f})"
    if o.max_cost is not None:
        # Stop BEFORE a call that could cross the cap: proposers that pay per call say
        # what the next one may cost at most (llm: its prompt and a max_tokens reply).
        upcoming = float(next_cost() if next_cost else 0.0)
        if spent + upcoming > o.max_cost:
            return (
                f"cost limit reached (${spent:.2f} spent of ${o.max_cost:.2f}; the next "
                f"model call could cost up to ${upcoming:.2f})"
            )
    return None


def remaining(opts: RunOptions, tally: Tally, elapsed_s: float, spent: float) -> Remaining:
    """What is left of this run's limits, for the proposer's context."""
    o = opts
    return Remaining(
        seconds=o.hours * 3600 - elapsed_s if o.hours is not None else None,
        experiments=o.experiments - tally.started if o.experiments is not None else None,
        usd=o.max_cost - spent if o.max_cost is not None else None,
    )


def record_stop(ledger: Ledger, reason: str, stopped_by: str) -> None:
    """Store why the night ended: an event, and the meta `status` reads."""
    ledger.event("stopped", reason=reason, stopped_by=stopped_by)
    ledger.set_meta(STOPPED_META, json.dumps({"reason": reason, "by": stopped_by}))


def clear_stop(ledger: Ledger) -> None:
    """A run is going: no stop to show until it ends."""
    ledger.set_meta(STOPPED_META, "")
