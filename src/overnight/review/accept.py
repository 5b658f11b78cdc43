"""`overnight accept N`: keep a `suspect` after looking at it in the morning.

A suspect is a would-be keep the night held back: its runs were implausibly fast, its gain
jumped beyond `[judge] max_jump`, or the holdout budget was spent before it could be read.
Accepting one makes it the keep it would have been — one commit on the study branch with
its measured gain — as long as the branch has not moved on since it was judged (otherwise
its gain was measured against a best that is gone: `overnight apply N` tries it by hand).
The stored verdict record is untouched, so `overnight verify` still recomputes `suspect`
and checks that the acceptance is recorded.
"""

from __future__ import annotations

import time

from overnight.errors import UsageError
from overnight.experiment.recorder import with_trailer
from overnight.judging.effect import effect_of
from overnight.judging.verdict import VerdictRecord, metric_decision
from overnight.store.evidence import LedgerEvidence
from overnight.store.lock import study_lock
from overnight.store.records import ExperimentRecord
from overnight.store.study import Study


def accept_suspect(study: Study, n: int) -> ExperimentRecord:
    """Make suspect `n` a keep on the study branch; refuses (UsageError) otherwise."""
    with study_lock(study.state_dir, study.name):  # never while a run is going
        ledger = study.open_ledger(readonly=False)
        try:
            rec = ledger.get(n)
            if rec is None:
                raise UsageError(f"study {study.name!r} has no experiment {n}")
            if rec.status != "suspect":
                raise UsageError(f"experiment {n} is {rec.status or 'undecided'}, not suspect: "
                                 "only a keep held for the morning review can be accepted")
            best = ledger.last_keep()
            assert best is not None and rec.commit
            if rec.parent != best.commit:
                raise UsageError(
                    f"experiment {n} was judged against an earlier best; the best is now "
                    f"experiment {best.experiment}, so its gain no longer holds. Try its "
                    f"change by hand with `overnight apply {n}`. Nothing was changed."
                )  # fmt: skip
            record = VerdictRecord.from_dict(rec.meta["verdict"])
            decision = metric_decision(record, LedgerEvidence(ledger), n)
            assert record.reference is not None
            effect = effect_of(decision, (len(record.candidate), len(record.reference.ids) or 1))
            ws = study.ws
            landed = with_trailer(ws, rec.commit, effect.trailer(study.cfg.metric.name))
            ws.set_experiment_ref(n, landed)
            meta = {**rec.meta, "gain": effect.as_dict(),
                    "accepted": {"at": time.time(), "reason": rec.reason}}  # fmt: skip
            reason = f"accepted in the morning review; it was held as suspect: {rec.reason}"
            ledger.set_verdict(n, "keep", reason, rec.value, rec.metrics, rec.wall_s,
                               meta=meta, commit=landed)  # fmt: skip
            ws.set_branch(landed, expected_old=best.commit)
            ledger.event("accept", experiment=n)
            ledger.write_tsv(study.tsv_path, study.cfg.metric.name)
            out = ledger.get(n)
            assert out is not None
            return out
        finally:
            ledger.close()
