"""`overnight verify`: recompute every verdict from the values stored in the ledger.

Each decision stores its rule's parameters and the ids of the measurements it compared
(decide.py). Replaying them through the same pure judge must give the same status; anything
else — an edited value, a missing measurement, a keep judged against something other than
the best of its time — is reported as a disagreement.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from overnight.config import ConstraintConfig
from overnight.experiment.gates import noise_before
from overnight.judging.constraints import check_constraints
from overnight.judging.rules import Decision, Rule, confirms, decide, holdout_regressed
from overnight.judging.stats import Noise, mean
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
        self.rows = ledger.measurement_values()
        self.by_id = {mid: (n, kind, value) for mid, n, kind, value in self.rows}
        self.kept: set[int] = set()  # keeps decided so far, in replay order

    def values(self, ids: Sequence[int], n: int, kinds: Sequence[str]) -> list[float]:
        """The stored values of `ids`, which must be successful `kinds` measurements of `n`."""
        out = []
        for mid in ids:
            if mid not in self.by_id:
                raise LookupError(f"measurement {mid} is missing from the ledger")
            owner, kind, value = self.by_id[mid]
            if owner != n or kind not in kinds:
                raise LookupError(f"measurement {mid} is a {kind} of experiment {owner}, "
                                  f"not of experiment {n}")  # fmt: skip
            if value is None:
                raise LookupError(f"measurement {mid} has no value")
            out.append(value)
        return out

    def failure_status(self, n: int, meta: dict[str, Any]) -> str | None:
        """What the stored measurements of `n` say a failure was (None: they show none)."""
        if meta.get("locked_changed"):
            return "rejected"
        rows = self.ledger.measurements(n, "run")
        if any(r["timed_out"] for r in rows):
            return "timeout"
        if any(r["exit_code"] != 0 or r["value"] is None for r in rows):
            return "crash"
        return None

    def metric(self, rec: ExperimentRecord, v: dict[str, Any], best: int) -> str:
        """The status the stored values give for a decision made by the metric rule."""
        n = rec.experiment
        rule = Rule.from_dict(v["rule"])
        ref = v["reference"]
        if ref["experiment"] != best:
            # Parallel slots judge a candidate against the best its run started from; a
            # verdict other than keep against an earlier best stands (it cannot beat the
            # newer one either). A keep must always be judged against the best of its time.
            if rec.status == "keep" or ref["experiment"] not in self.kept:
                raise LookupError(f"judged against experiment {ref['experiment']}, but the "
                                  f"best at the time was experiment {best}")  # fmt: skip
            best = ref["experiment"]
        cand = self.values(v["candidate"], n, ["run"])
        reference = self.values(ref["ids"], best, ["run", "confirm", "remeasure"])
        if not reference:  # decided before measurements were stored: its recorded value
            best_rec = self.ledger.get(best)
            reference = [best_rec.value] if best_rec and best_rec.value is not None else []
        if rec.value is None or not _close(rec.value, mean(cand)):
            raise LookupError(f"stored value {rec.value} is not the mean of its runs "
                              f"({mean(cand):.6g})")  # fmt: skip
        noise = None
        if v.get("noise"):
            noise = noise_before(self.rows, v["noise"]["upto_id"], n)
            if noise is None or not _close(noise.sd, v["noise"]["sd"]):
                raise LookupError("the stored noise estimate does not match the measurements")
        sizes = (int(v["sizes"][0]), int(v["sizes"][1])) if v.get("sizes") else None
        first = decide(rule, cand, reference, reference_experiment=best, noise=noise,
                       sizes=sizes)  # fmt: skip
        if first.status != "keep":
            return first.status
        return self._gates(n, v, first, rule, reference, best, noise, sizes)

    def _gates(
        self, n: int, v: dict[str, Any], first: Decision, rule: Rule, reference: list[float],
        best: int, noise: Noise | None, sizes: tuple[int, int] | None,
    ) -> str:  # fmt: skip
        """The confirming re-run and the holdout gate of a would-be keep."""
        if "confirm" in v:
            c = v["confirm"]
            if c.get("failed"):
                return "rejected"
            values = self.values(c["ids"], n, ["confirm"])
            again = decide(rule, values, reference, reference_experiment=best, noise=noise,
                           sizes=sizes)  # fmt: skip
            if not confirms(first, again):
                return "rejected"
        if "holdout" in v:
            h = v["holdout"]
            try:
                (value,) = self.values(h["ids"], n, ["holdout"])
            except (LookupError, ValueError):
                return "rejected"  # the holdout failed: the keep could not be verified
            if h.get("reference_ids"):
                (ref,) = self.values(h["reference_ids"], best, ["holdout"])
                if holdout_regressed(value, ref, h["goal"], h["tolerance"]):
                    return "rejected"
        return "keep"


def verify_ledger(ledger: Ledger) -> VerifyReport:
    """Replay every decision in the order it was made."""
    report = VerifyReport()
    replay = _Replay(ledger)
    records = sorted(ledger.records(), key=lambda r: (r.decided_at or 0.0, r.experiment))
    best: int | None = None
    for rec in records:
        n, v = rec.experiment, rec.meta.get("verdict")
        if n == 0:
            if rec.status != "keep":
                report.disagreements.append((0, f"the baseline is {rec.status}, not keep"))
            ids = v.get("candidate") if isinstance(v, dict) else None
            if ids:
                try:
                    values = replay.values(ids, 0, ["run"])
                    if rec.value is None or not _close(rec.value, mean(values)):
                        raise LookupError(f"stored value {rec.value} is not the mean of its runs")
                except LookupError as exc:
                    report.disagreements.append((0, f"the baseline: {exc}"))
            best = 0
            replay.kept.add(0)
            report.checked += 1
            continue
        if not isinstance(v, dict):
            why = "nothing was measured" if rec.status in ("invalid", "rejected") else (
                "decided without a stored rule (an older overnight)")  # fmt: skip
            report.skipped.append((n, why))
            continue
        try:
            expected = _expected(replay, rec, v, best)
        except (LookupError, KeyError, TypeError, ValueError) as exc:
            report.disagreements.append((n, f"cannot be recomputed: {exc}"))
            continue
        report.checked += 1
        if expected != rec.status:
            report.disagreements.append(
                (n, f"recomputed {expected}, but the ledger says {rec.status}")
            )
        if rec.status == "keep":
            best = n
            replay.kept.add(n)
    return report


def _expected(replay: _Replay, rec: ExperimentRecord, v: dict[str, Any], best: int | None) -> str:
    stage = v.get("stage")
    if stage == "failure":
        found = replay.failure_status(rec.experiment, v)
        if found is None:
            raise LookupError("recorded as a failure, but every stored run succeeded")
        return found
    if stage == "constraint":
        constraints = [ConstraintConfig(**c) for c in v.get("constraints", [])]
        verdict = check_constraints(rec.metrics, constraints)
        return verdict.status if verdict else "(no constraint broken)"
    if best is None:
        raise LookupError("decided before any baseline")
    found = replay.metric(rec, v, best)
    if v.get("stale") and found == "keep":
        return "discard"  # it won, but could not be carried over to a best that moved on
    return found
