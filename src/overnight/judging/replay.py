"""`overnight verify`: reach every verdict again from the values stored in the ledger.

Each decision stored the typed record of how it was reached (judging/verdict.py). Replaying
it means calling the very `judge()` the loop called, on the stored values; anything else —
an edited value, a missing measurement, a keep judged against something other than the
best of its time, a noise estimate that does not follow from the measurements — is
reported as a disagreement.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from overnight.config import ConstraintConfig
from overnight.judging import controls
from overnight.judging.rules import Verdict
from overnight.judging.stats import mean
from overnight.judging.verdict import VerdictRecord, judge, noise_before
from overnight.store.evidence import LedgerEvidence
from overnight.store.ledger import Ledger
from overnight.store.records import ExperimentRecord

# Stored and recomputed floats may differ in the last bits (JSON round trip).
REL_TOL = 1e-9


@dataclass
class VerifyReport:
    checked: int = 0  # verdicts recomputed and compared
    skipped: list[tuple[int, str]] = field(default_factory=list)  # (experiment, why)
    disagreements: list[tuple[int, str]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.disagreements

    def as_dict(self) -> dict[str, Any]:
        return {
            "checked": self.checked,
            "skipped": [{"experiment": n, "why": w} for n, w in self.skipped],
            "disagreements": [{"experiment": n, "problem": p} for n, p in self.disagreements],
            "ok": self.ok,
        }


def _close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=REL_TOL, abs_tol=1e-12)


class _Replay:
    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger
        self.evidence = LedgerEvidence(ledger).preload()
        self.rows = ledger.measurement_values()
        self.kept: set[int] = set()  # keeps decided so far, in replay order
        self.best: int | None = None

    def check(self, rec: ExperimentRecord, v: VerdictRecord) -> str:
        """The status the stored values give, after checking the record against them."""
        n = rec.experiment
        if v.stage in ("failure", "constraint"):
            constraints = [ConstraintConfig(**c) for c in v.constraints]
            return judge(v, self.evidence, n, rec.metrics, constraints).status
        if self.best is None:
            raise LookupError("decided before any baseline")
        if v.reference is None:
            raise LookupError("the record names no reference")
        ref = v.reference.experiment
        if ref != self.best and (rec.status == "keep" or ref not in self.kept):
            # Parallel slots judge a candidate against the best its run started from; a
            # verdict other than keep against an earlier best stands (it cannot beat the
            # newer one either). A keep must always be judged against the best of its time.
            raise LookupError(f"judged against experiment {ref}, but the best at the time was "
                              f"experiment {self.best}")  # fmt: skip
        cand = self.evidence.values(v.candidate, n, ["run"])
        if rec.value is None or not cand or not _close(rec.value, mean(cand)):
            shown = f"{mean(cand):.6g}" if cand else "none"
            raise LookupError(f"stored value {rec.value} is not the mean of its runs ({shown})")
        if v.noise is not None:
            noise = noise_before(self.rows, v.noise.upto_id, n)
            if noise is None or not _close(noise.sd, v.noise.sd) or noise.df != v.noise.df:
                raise LookupError("the stored noise estimate does not match the measurements")
        return judge(v, self.evidence, n, rec.metrics).status

    def baseline(self, rec: ExperimentRecord, v: VerdictRecord | None) -> str | None:
        if rec.status != "keep":
            return f"the baseline is {rec.status}, not keep"
        if v is not None and v.candidate:
            try:
                values = self.evidence.values(v.candidate, 0, ["run"])
                if rec.value is None or not _close(rec.value, mean(values)):
                    return f"the baseline: stored value {rec.value} is not the mean of its runs"
            except LookupError as exc:
                return f"the baseline: {exc}"
        return None


def _compare(rec: ExperimentRecord, expected: str) -> str | None:
    """What is wrong with the stored status, given the status the rule recomputes."""
    if rec.control_of is None:
        accepted = rec.status == "keep" and expected == "suspect" and "accepted" in rec.meta
        if expected != rec.status and not accepted:
            return f"recomputed {expected}, but the ledger says {rec.status}"
        return None
    stored = controls.stored_verdict(Verdict(expected, ""), rec.control_of).status
    said = (rec.meta.get("control") or {}).get("verdict")
    if stored != rec.status or said != expected:
        return (f"a control: recomputed {expected} (stored as {stored}), but the ledger says "
                f"{rec.status} (the rule gave {said})")  # fmt: skip
    return None


def verify_ledger(ledger: Ledger) -> VerifyReport:
    """Replay every decision in the order it was made."""
    report = VerifyReport()
    replay = _Replay(ledger)
    records = sorted(ledger.records(), key=lambda r: (r.decided_at or 0.0, r.experiment))
    for rec in records:
        n, raw = rec.experiment, rec.meta.get("verdict")
        try:
            v = VerdictRecord.from_dict(raw) if isinstance(raw, dict) else None
        except (KeyError, TypeError, ValueError) as exc:
            report.disagreements.append((n, f"cannot be recomputed: malformed record ({exc})"))
            continue
        if n == 0:
            problem = replay.baseline(rec, v)
            if problem:
                report.disagreements.append((0, problem))
            replay.best = 0
            replay.kept.add(0)
            report.checked += 1
            continue
        if v is None:
            why = "nothing was measured" if rec.status in ("invalid", "rejected") else (
                "decided without a stored rule (an older overnight)")  # fmt: skip
            report.skipped.append((n, why))
            continue
        try:
            expected = replay.check(rec, v)
        except (LookupError, KeyError, TypeError, ValueError) as exc:
            report.disagreements.append((n, f"cannot be recomputed: {exc}"))
            continue
        report.checked += 1
        problem = _compare(rec, expected)
        if problem:
            report.disagreements.append((n, problem))
        if rec.status == "keep":
            replay.best = n
            replay.kept.add(n)
    return report
