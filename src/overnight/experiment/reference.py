"""What a candidate is compared with: the best's freshest measurements, the noise pooled
from earlier repeated measurements, the best's holdout value, and the periodic
re-measurement of the best that catches a drifting machine."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from overnight.judging.stats import mean, pooled_noise, welch
from overnight.judging.verdict import METRIC_KINDS, NoiseUsed, noise_before
from overnight.store.ledger import Ledger
from overnight.store.records import ExperimentRecord

if TYPE_CHECKING:
    from overnight.experiment.measure import Measurer


def _ok(rows: list[dict]) -> list[dict]:
    return [r for r in rows if r["value"] is not None and r["exit_code"] == 0
            and not r["timed_out"]]  # fmt: skip


def reference(ledger: Ledger, best: ExperimentRecord) -> tuple[list[float], list[int]]:
    """The best's freshest round of measurements: its latest re-measurement, else its
    confirming re-run, else the runs it was kept on. Confirmations and re-measurements are
    not selected for looking good, so they are the fairer yardstick."""
    by_id = {r["id"]: r for r in ledger.measurements(best.experiment)}
    stored = json.loads(ledger.get_meta("reference") or "null")
    kept_on = best.meta.get("verdict", {}) if isinstance(best.meta, dict) else {}
    for ids in (
        stored["ids"] if stored and stored.get("experiment") == best.experiment else None,
        (kept_on.get("confirm") or {}).get("ids"),
        kept_on.get("candidate"),
    ):
        rows = [by_id[i] for i in ids or [] if i in by_id and by_id[i]["kind"] in METRIC_KINDS]
        rows = _ok(rows)
        if rows and len(rows) == len(ids or []):
            return [r["value"] for r in rows], [r["id"] for r in rows]
    # A best decided before decisions recorded their measurements.
    rows = _ok([r for r in by_id.values() if r["kind"] == "run"])
    if rows:
        return [r["value"] for r in rows], [r["id"] for r in rows]
    assert best.value is not None, "the best has neither measurements nor a value"
    return [best.value], []


class NoisePool:
    """The metric measurements of experiments measured more than once, kept in memory so
    the pooled noise estimate costs the same at any length of night. Gives exactly what
    `noise_before` over every stored measurement gives (groups of one carry no noise)."""

    def __init__(self, ledger: Ledger) -> None:
        self.groups: dict[int, list[tuple[int, str, float | None]]] = {}
        self.multi: set[int] = set()  # experiments with two measurements or more
        for mid, n, kind, value in ledger.measurement_values():
            self.add(mid, n, kind, value)

    def add(self, mid: int, n: int, kind: str, value: float | None) -> None:
        if kind in METRIC_KINDS:
            group = self.groups.setdefault(n, [])
            group.append((mid, kind, value))
            if len(group) == 2:
                self.multi.add(n)

    def retire(self, n: int) -> None:
        self.groups.pop(n, None)
        self.multi.discard(n)

    def before(self, upto_id: int, exclude: int) -> NoiseUsed | None:
        # Only groups of two or more carry noise: walking just those keeps a night of
        # single runs from paying for every experiment ever measured.
        rows = [(mid, n, kind, v) for n in self.multi for mid, kind, v in self.groups[n]]
        noise = noise_before(rows, upto_id, exclude)
        return NoiseUsed(noise.sd, noise.df, upto_id) if noise else None


def has_holdout(ledger: Ledger, best: ExperimentRecord) -> bool:
    """Whether the best's holdout value is stored (else `best_holdout` measures it)."""
    return bool(_ok(ledger.measurements(best.experiment, "holdout"))) or not best.commit


def best_holdout(
    ledger: Ledger, measurer: Measurer, best: ExperimentRecord
) -> tuple[float | None, int | None]:
    """The best's holdout value and its measurement id, measured now if it never was (a
    holdout added to a study later)."""
    rows = _ok(ledger.measurements(best.experiment, "holdout"))
    if not rows and best.commit:
        run = measurer.measure_holdout(best.experiment, best.commit, abort=False)
        return (run.value, run.id) if run.value is not None else (None, None)
    return (rows[-1]["value"], rows[-1]["id"]) if rows else (None, None)


def remeasure(
    ledger: Ledger, measurer: Measurer, best: ExperimentRecord, next_n: int, every: int,
    alpha: float,
) -> str | None:  # fmt: skip
    """Every `every` experiments, measure the best again: the machine may have drifted
    (thermal throttling, a noisy neighbour). The fresh values become the reference, and the
    shift is recorded as a `drift` event. Returns a line for the user, if it ran."""
    if not every or not best.commit:
        return None
    last = int(ledger.get_meta("remeasured_at", "0") or 0)
    if next_n - max(last, best.experiment + 1) < every:
        return None
    old, old_ids = reference(ledger, best)
    done = ledger.measurements(best.experiment)
    first = 1 + max((r["repeat"] for r in done), default=-1)
    runs = measurer.measure(best.experiment, best.commit, kind="remeasure", first_repeat=first,
                            abort=False)  # fmt: skip
    ledger.set_meta("remeasured_at", str(next_n))
    failed = next((r for r in runs if r.status is not None), None)
    if failed is not None:
        ledger.event("drift", experiment=best.experiment, before_experiment=next_n,
                     error=f"{failed.status}: {failed.error}")  # fmt: skip
        return f"re-measuring the best (experiment {best.experiment}) failed: {failed.error}"
    new = [r.value for r in runs if r.value is not None]
    ids = [r.id for r in runs]
    shift = mean(new) - mean(old)
    p = sigma = None
    if len(new) >= 2 and len(old) >= 2:
        t = welch(new, old)
        p = min(1.0, 2 * min(t.p, t.p_below(0.0)))  # two-sided: drift goes either way
    noise = pooled_noise([new, old])
    if noise is not None and noise.sd > 0:
        sigma = shift / noise.sd
    significant = p is not None and p < alpha
    ledger.event(
        "drift", experiment=best.experiment, before_experiment=next_n, before=mean(old),
        after=mean(new), shift=shift, sigma=sigma, p=p, significant=significant,
        ids=ids, previous_ids=old_ids,
    )  # fmt: skip
    ledger.set_meta("reference", json.dumps({"experiment": best.experiment, "ids": ids}))
    rel = f" ({shift / abs(mean(old)) * 100:+.2f}%)" if mean(old) else ""
    flag = " — significant drift" if significant else ""
    return (f"re-measured the best (experiment {best.experiment}): {mean(old):.6g} → "
            f"{mean(new):.6g}{rel}{flag}")  # fmt: skip
