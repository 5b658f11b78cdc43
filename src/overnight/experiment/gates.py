"""The loop's side of a verdict: gather the values the judge compares, run the gates
(confirming re-run, holdout), re-measure the best now and then, and store with each decision
everything `overnight verify` needs to recompute it.

The judge (judge.py) stays a pure function of numbers; this module is what feeds it from the
ledger and the executor. What it stores in an experiment's `meta["verdict"]`:
  stage       "baseline" | "failure" | "constraint" | "metric" | "confirm" | "holdout"
  rule        the Rule (goal, alpha, threshold in metric units, prefer_simpler)
  candidate   measurement ids of the candidate's runs; reference {experiment, ids}
  noise       {sd, df, upto_id} when a pooled estimate was used; sizes for prefer_simpler
  confirm     {ids} of the confirming re-run; holdout {ids, reference_ids, tolerance, goal}
Holdout *values* are never put there: the proposer sees experiment metadata.
"""

from __future__ import annotations

import json
from collections import defaultdict
from typing import Any

from overnight.errors import OvernightError
from overnight.executors.base import RunReport
from overnight.experiment.measure import Measurer
from overnight.git.workspace import Workspace
from overnight.judging.constraints import check_constraints
from overnight.judging.rules import (
    Decision,
    Rule,
    Verdict,
    confirms,
    decide,
    holdout_regressed,
    surface_size,
)
from overnight.judging.stats import Noise, mean, pooled_noise, welch
from overnight.metrics import primary_value
from overnight.store.ledger import Ledger
from overnight.store.records import ExperimentRecord
from overnight.store.study import Study

# Kinds of measurement that repeat the metric run of a commit (the holdout is another number).
METRIC_KINDS = ("run", "confirm", "remeasure")


def noise_before(
    rows: list[tuple[int, int, str, float | None]], upto_id: int, exclude: int
) -> Noise | None:
    """The pooled noise of every commit measured more than once, from measurements with
    id <= `upto_id` of experiments other than `exclude`."""
    groups: dict[int, list[float]] = defaultdict(list)
    for mid, n, kind, value in rows:
        if mid <= upto_id and n != exclude and kind in METRIC_KINDS and value is not None:
            groups[n].append(value)
    return pooled_noise(groups.values())


class Decider:
    def __init__(
        self, study: Study, ledger: Ledger, measure: Measurer, ws: Workspace, surface: list[str]
    ) -> None:
        self.study = study
        self.cfg = study.cfg
        self.ledger = ledger
        self.measure = measure
        self.ws = ws
        self.surface = surface

    # == values ==============================================================================

    def _rows(self, n: int, kind: str, count: int) -> tuple[list[float], list[int]]:
        """Values and ids of the last `count` successful measurements of `kind` of `n`."""
        rows = self.ledger.measurements(n, kind)[-count:]
        ok = [r for r in rows if r["value"] is not None and r["exit_code"] == 0]
        return [r["value"] for r in ok], [r["id"] for r in ok]

    def reference(self, best: ExperimentRecord) -> tuple[list[float], list[int]]:
        """The best's freshest round of measurements: its latest re-measurement, else its
        confirming re-run, else the runs it was kept on. Confirmations and re-measurements
        are not selected for looking good, so they are the fairer yardstick."""
        by_id = {r["id"]: r for r in self.ledger.measurements(best.experiment)}
        stored = json.loads(self.ledger.get_meta("reference") or "null")
        kept_on = best.meta.get("verdict", {}) if isinstance(best.meta, dict) else {}
        for ids in (
            stored["ids"] if stored and stored.get("experiment") == best.experiment else None,
            (kept_on.get("confirm") or {}).get("ids"),
            kept_on.get("candidate"),
        ):
            rows = [by_id[i] for i in ids or [] if i in by_id and by_id[i]["value"] is not None]
            if rows and len(rows) == len(ids or []):
                return [r["value"] for r in rows], [r["id"] for r in rows]
        # A best decided before decisions recorded their measurements.
        values, ids = self._rows(best.experiment, "run", 10**9)
        if values:
            return values, ids
        assert best.value is not None, "the best has neither measurements nor a value"
        return [best.value], []

    def _store(self, n: int, verdict_meta: dict[str, Any], reports: list[RunReport]) -> None:
        rec = self.ledger.get(n)
        meta = dict(rec.meta) if rec else {}
        meta["verdict"] = verdict_meta
        if reports:
            meta["isolation"] = reports[0].isolation
        self.ledger.set_state(n, rec.state if rec else "running", meta=meta)

    # == the baseline ========================================================================

    def baseline(self, commit: str, reports: list[RunReport]) -> None:
        """Record the baseline's values and measure its holdout (which every keep is then
        compared with); a failing holdout stops the study like a failing baseline."""
        _, ids = self._rows(0, "run", len(reports))
        meta: dict[str, Any] = {"stage": "baseline", "candidate": ids}
        if self.cfg.holdout.command:
            report = self.measure.measure_holdout(0, commit)
            value, why = self._holdout_value(report)
            if value is None:
                self.ledger.set_state(0, "aborted", reason=f"holdout failed: {why}")
                raise OvernightError(
                    f"the holdout failed on the baseline: {why}\nlogs: {self.study.exp_dir(0)}"
                    f"\nFix [holdout].command so it prints {self.cfg.holdout.name!r} for the "
                    "unchanged code, then run again."
                )
            meta["holdout"] = {"ids": [self._last_id(0, "holdout")]}
        self._store(0, meta, reports)

    # == one candidate =======================================================================

    def verdict(
        self,
        n: int,
        commit: str,
        reports: list[RunReport],
        gate: Verdict | None,
        best: ExperimentRecord,
        best_files: dict[str, str],
    ) -> Verdict:
        """The verdict of candidate `n`, measured in `reports`. `gate`: the verdict of a
        failed run or a broken constraint, if any (stored, so `verify` can replay it)."""
        if gate is not None:
            failed = self.measure.failure(reports) is not None
            meta: dict[str, Any] = {"stage": "failure" if failed else "constraint"}
            locked = sorted({p for r in reports for p in r.locked_changed})
            if locked:
                meta["locked_changed"] = locked
            if not failed:
                meta["constraints"] = [c.model_dump() for c in self.cfg.constraints]
            self._store(n, meta, reports)
            return gate
        cand, ids = self._rows(n, "run", len(reports))
        ref, ref_ids = self.reference(best)
        m = self.cfg.metric
        rule = Rule(m.name, m.goal, m.alpha, m.threshold(mean(ref)), m.prefer_simpler)
        noise, upto = None, None
        if min(len(cand), len(ref)) < 2 and ids:
            upto = min(ids) - 1
            noise = noise_before(self.ledger.measurement_values(), upto, n)
        sizes = None
        if m.prefer_simpler:
            cand_files = self.ws.read_files(commit, self.surface)
            sizes = (surface_size(best_files), surface_size(cand_files))
        first = decide(rule, cand, ref, reference_experiment=best.experiment, noise=noise,
                       sizes=sizes)  # fmt: skip
        meta = {
            "stage": "metric", "rule": rule.as_dict(), "method": first.method,
            "kind": first.kind, "p": first.p, "candidate": ids,
            "reference": {"experiment": best.experiment, "ids": ref_ids},
            "noise": {**noise.as_dict(), "upto_id": upto} if noise else None,
            "sizes": list(sizes) if sizes else None,
        }  # fmt: skip
        verdict = first.verdict
        if verdict.status == "keep" and m.confirm:
            verdict = self._confirm(n, commit, first, rule, ref, best, noise, sizes, meta)
        if verdict.status == "keep" and self.cfg.holdout.command:
            verdict = self._holdout(n, commit, best, meta) or verdict
        self._store(n, meta, reports)
        return verdict

    def _confirm(
        self, n: int, commit: str, first: Decision, rule: Rule, ref: list[float],
        best: ExperimentRecord, noise: Noise | None, sizes: tuple[int, int] | None,
        meta: dict[str, Any],
    ) -> Verdict:  # fmt: skip
        """Re-run a would-be keep once more (`repeats` runs, new seeds) and judge it again."""
        meta["stage"] = "confirm"
        k = self.cfg.metric.repeats
        reports = self.measure.measure(n, commit, kind="confirm", first_repeat=k)
        failed = self.measure.failure(reports) or check_constraints(
            reports[-1].metrics, self.cfg.constraints
        )
        values, ids = self._rows(n, "confirm", len(reports))
        meta["confirm"] = {"ids": ids}
        if failed is not None:
            meta["confirm"]["failed"] = failed.status
            return Verdict("rejected", f"the confirming re-run failed ({failed.status}): "
                           f"{failed.reason}")  # fmt: skip
        again = decide(rule, values, ref, reference_experiment=best.experiment, noise=noise,
                       sizes=sizes)  # fmt: skip
        meta["confirm"].update(kind=again.kind, p=again.p)
        if not confirms(first, again):
            return Verdict("rejected", f"the confirming re-run did not hold: {again.reason}")
        return Verdict("keep", f"{first.reason}; confirmed by a re-run: {again.reason}")

    # == the holdout =========================================================================

    def _holdout_value(self, report: RunReport) -> tuple[float | None, str]:
        if report.timed_out:
            return None, f"timed out at the budget of {self.cfg.study.budget:g}s"
        if report.exit_code != 0:
            return None, f"exited with code {report.exit_code}"
        if report.locked_changed:
            return None, "changed locked files: " + ", ".join(report.locked_changed[:5])
        value, err = primary_value(report.metrics, self.cfg.holdout.name)
        return value, err or ""

    def _last_id(self, n: int, kind: str) -> int:
        return int(self.ledger.measurements(n, kind)[-1]["id"])

    def best_holdout(self, best: ExperimentRecord) -> tuple[float | None, int | None]:
        """The best's holdout value, measured now if it never was (holdout added later)."""
        rows = [r for r in self.ledger.measurements(best.experiment, "holdout")
                if r["value"] is not None and r["exit_code"] == 0]  # fmt: skip
        if not rows and best.commit:
            report = self.measure.measure_holdout(best.experiment, best.commit, abort=False)
            value, _ = self._holdout_value(report)
            return value, self._last_id(best.experiment, "holdout") if value is not None else None
        return (rows[-1]["value"], rows[-1]["id"]) if rows else (None, None)

    def _holdout(
        self, n: int, commit: str, best: ExperimentRecord, meta: dict[str, Any]
    ) -> Verdict | None:
        """Gate a would-be keep on the hidden holdout (None: it passes). Reasons carry no
        holdout numbers: they are shown to the proposer."""
        h = self.cfg.holdout
        meta["stage"] = "holdout"
        reference, ref_id = self.best_holdout(best)
        report = self.measure.measure_holdout(n, commit)
        value, why = self._holdout_value(report)
        meta["holdout"] = {"ids": [self._last_id(n, "holdout")], "tolerance": h.tolerance,
                           "goal": h.goal, "reference_ids": [ref_id] if ref_id else []}  # fmt: skip
        if value is None:
            return Verdict("rejected", f"the holdout evaluation failed ({why}); the keep "
                           "cannot be verified")  # fmt: skip
        if reference is not None and holdout_regressed(value, reference, h.goal, h.tolerance):
            return Verdict("rejected", f"the holdout regressed beyond [holdout].tolerance "
                           f"({h.tolerance:g}) against experiment {best.experiment}")  # fmt: skip
        return None

    # == drift ===============================================================================

    def maybe_remeasure(self, best: ExperimentRecord, next_n: int) -> str | None:
        """Every `remeasure_every` experiments, measure the best again: the machine may have
        drifted (thermal throttling, a noisy neighbour). The fresh values become the
        reference, and the shift is recorded as a `drift` event."""
        every = self.cfg.metric.remeasure_every
        if not every or not best.commit:
            return None
        last = int(self.ledger.get_meta("remeasured_at", "0") or 0)
        if next_n - max(last, best.experiment + 1) < every:
            return None
        old, old_ids = self.reference(best)
        done = self.ledger.measurements(best.experiment)
        first = 1 + max((r["repeat"] for r in done), default=-1)
        reports = self.measure.measure(best.experiment, best.commit, kind="remeasure",
                                       first_repeat=first, abort=False)  # fmt: skip
        self.ledger.set_meta("remeasured_at", str(next_n))
        failed = self.measure.failure(reports)
        if failed is not None:
            self.ledger.event("drift", experiment=best.experiment, before_experiment=next_n,
                              error=f"{failed.status}: {failed.reason}")  # fmt: skip
            return f"re-measuring the best (experiment {best.experiment}) failed: {failed.reason}"
        new, ids = self._rows(best.experiment, "remeasure", len(reports))
        shift = mean(new) - mean(old)
        p = sigma = None
        if len(new) >= 2 and len(old) >= 2:
            t = welch(new, old)
            p = min(1.0, 2 * min(t.p, t.p_below(0.0)))  # two-sided: drift goes either way
        noise = pooled_noise([new, old])
        if noise is not None and noise.sd > 0:
            sigma = shift / noise.sd
        significant = p is not None and p < self.cfg.metric.alpha
        self.ledger.event(
            "drift", experiment=best.experiment, before_experiment=next_n, before=mean(old),
            after=mean(new), shift=shift, sigma=sigma, p=p, significant=significant,
            ids=ids, previous_ids=old_ids,
        )  # fmt: skip
        self.ledger.set_meta("reference", json.dumps({"experiment": best.experiment, "ids": ids}))
        rel = f" ({shift / abs(mean(old)) * 100:+.2f}%)" if mean(old) else ""
        flag = " — significant drift" if significant else ""
        return (f"re-measured the best (experiment {best.experiment}): {mean(old):.6g} → "
                f"{mean(new):.6g}{rel}{flag}")  # fmt: skip
