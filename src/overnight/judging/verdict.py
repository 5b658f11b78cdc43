"""How a verdict was reached: a typed record, and the one function that reaches it.

The pipeline builds a `VerdictRecord` stage by stage while it measures (which measurements
were compared, under which rule, what the confirming re-run and the holdout gave) and calls
`judge()` on it after each stage. The record is stored with the experiment; `overnight
verify` loads it back and calls the very same `judge()` on the values stored in the ledger.
A replay, not a copy: the two cannot drift apart.

`judge()` reads values through `Evidence` (measurement ids → values), so it never touches
the ledger itself and stays a pure function of what it is given.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

from overnight.judging import sentinels
from overnight.judging.rules import Decision, Rule, Verdict, confirms, decide, holdout_regressed
from overnight.judging.sentinels import SentinelRecord
from overnight.judging.stats import Noise, pooled_noise

# Kinds of measurement that repeat the metric run of a commit (the holdout is another number).
METRIC_KINDS = ("run", "confirm", "remeasure")
STAGES = ("baseline", "failure", "constraint", "metric", "sentinel", "confirm", "holdout")


@dataclass
class RunRow:
    """One stored measurement, as judging needs it."""

    id: int
    kind: str
    exit_code: int | None
    timed_out: bool
    value: float | None
    error: str | None
    wall_s: float | None = None


class Evidence(Protocol):
    def values(self, ids: Sequence[int], n: int, kinds: Sequence[str]) -> list[float]:
        """The values of measurements `ids`, which must be successful `kinds` measurements of
        experiment `n`; raises LookupError otherwise."""

    def runs(self, n: int, kind: str) -> list[RunRow]:
        """Experiment `n`'s measurements of `kind`, oldest first."""

    def recorded_value(self, n: int) -> float | None:
        """The value stored for experiment `n` (for bests measured before ids were kept)."""


@dataclass
class Reference:
    experiment: int
    ids: list[int] = field(default_factory=list)


@dataclass
class NoiseUsed:
    sd: float
    df: int
    upto_id: int  # the estimate pooled measurements with id <= this


@dataclass
class ConfirmRecord:
    ids: list[int] = field(default_factory=list)
    failed: str | None = None  # status of a confirming run that failed
    reason: str = ""  # and why
    kind: str = ""
    p: float | None = None


@dataclass
class HoldoutRecord:
    ids: list[int] = field(default_factory=list)
    reference_ids: list[int] = field(default_factory=list)
    tolerance: float = 0.0
    goal: str = "maximize"


@dataclass
class VerdictRecord:
    """Everything needed to reach a verdict again from stored values. Holdout *values* are
    never part of it: the proposer sees experiment metadata."""

    stage: str
    candidate: list[int] = field(default_factory=list)  # measurement ids of its runs
    rule: Rule | None = None
    method: str = ""
    kind: str = ""
    p: float | None = None
    reference: Reference | None = None
    noise: NoiseUsed | None = None
    sizes: tuple[int, int] | None = None  # (best, candidate) for prefer_simpler
    confirm: ConfirmRecord | None = None
    holdout: HoldoutRecord | None = None
    locked_changed: list[str] = field(default_factory=list)
    constraints: list[dict[str, Any]] = field(default_factory=list)
    stale: str = ""  # it won, but could not be carried over to a best that moved on
    transfer: dict[str, Any] | None = None  # how the change was carried onto the best
    sentinel: SentinelRecord | None = None  # the implausibility checks of a would-be keep
    hold: str = ""  # why a would-be keep was held for the morning without its holdout run

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"stage": self.stage, "candidate": list(self.candidate)}
        for name in ("method", "kind", "p", "stale", "hold"):
            if getattr(self, name) not in ("", None):
                out[name] = getattr(self, name)
        for name in ("rule", "reference", "noise", "confirm", "holdout", "transfer", "sentinel"):
            value = getattr(self, name)
            if value is not None:
                out[name] = value if isinstance(value, dict) else asdict(value)
        if self.sizes is not None:
            out["sizes"] = list(self.sizes)
        if self.locked_changed:
            out["locked_changed"] = list(self.locked_changed)
        if self.constraints:
            out["constraints"] = list(self.constraints)
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> VerdictRecord:
        """Read a stored record; raises KeyError/TypeError/ValueError when it is malformed."""
        if d.get("stage") not in STAGES:
            raise ValueError(f"unknown verdict stage {d.get('stage')!r}")

        def sub(name: str, kind: type) -> Any:
            value = d.get(name)
            return kind(**value) if isinstance(value, dict) else None

        noise = d.get("noise")
        return cls(
            stage=d["stage"],
            candidate=[int(i) for i in d.get("candidate") or []],
            rule=Rule.from_dict(d["rule"]) if isinstance(d.get("rule"), dict) else None,
            method=d.get("method") or "",
            kind=d.get("kind") or "",
            p=d.get("p"),
            reference=sub("reference", Reference),
            noise=NoiseUsed(float(noise["sd"]), int(noise["df"]), int(noise["upto_id"]))
            if isinstance(noise, dict) else None,
            sizes=(int(d["sizes"][0]), int(d["sizes"][1])) if d.get("sizes") else None,
            confirm=sub("confirm", ConfirmRecord),
            holdout=sub("holdout", HoldoutRecord),
            locked_changed=list(d.get("locked_changed") or []),
            constraints=list(d.get("constraints") or []),
            stale=d.get("stale") or "",
            transfer=d.get("transfer") if isinstance(d.get("transfer"), dict) else None,
            sentinel=sub("sentinel", SentinelRecord),
            hold=d.get("hold") or "",
        )  # fmt: skip


def noise_before(
    rows: Iterable[tuple[int, int, str, float | None]], upto_id: int, exclude: int
) -> Noise | None:
    """The pooled noise of every commit measured more than once, from measurements
    (id, experiment, kind, value) with id <= `upto_id` of experiments other than `exclude`."""
    groups: dict[int, list[float]] = defaultdict(list)
    for mid, n, kind, value in rows:
        if mid <= upto_id and n != exclude and kind in METRIC_KINDS and value is not None:
            groups[n].append(value)
    return pooled_noise(groups.values())


# == failures ================================================================================


def failure_status(
    timed_out: bool, exit_code: int | None, has_value: bool, locked: bool = False
) -> str | None:
    """The status a run earns on its own (None: it measured). The one place this rule is."""
    if locked:
        return "rejected"
    if timed_out:
        return "timeout"
    if exit_code != 0 or not has_value:
        return "crash"
    return None


def failure_of(rows: Sequence[RunRow], locked_changed: Sequence[str] = ()) -> Verdict | None:
    """The verdict of the first failed run of `rows`, or None when every one measured."""
    if locked_changed:
        changed = ", ".join(locked_changed[:10])
        return Verdict("rejected", f"the run changed locked files: {changed}")
    for row in rows:
        status = failure_status(row.timed_out, row.exit_code, row.value is not None)
        if status is not None:
            return Verdict(status, row.error or status)
    return None


# == the verdict =============================================================================


def reference_values(rec: VerdictRecord, ev: Evidence) -> tuple[int, list[float]]:
    assert rec.reference is not None
    ref = rec.reference
    values = ev.values(ref.ids, ref.experiment, METRIC_KINDS)
    if not values:  # a best decided before measurements were stored: its recorded value
        recorded = ev.recorded_value(ref.experiment)
        values = [recorded] if recorded is not None else []
    if not values:
        raise LookupError(f"experiment {ref.experiment} has no value to compare with")
    return ref.experiment, values


def metric_decision(rec: VerdictRecord, ev: Evidence, n: int) -> Decision:
    """The noise-aware rule on the candidate's runs against the best's reference runs."""
    if rec.rule is None or rec.reference is None:
        raise LookupError("the record has no rule or no reference")
    best, ref = reference_values(rec, ev)
    cand = ev.values(rec.candidate, n, ["run"])
    if not cand:
        raise LookupError("the record names no runs of the candidate")
    noise = Noise(rec.noise.sd, rec.noise.df) if rec.noise else None
    return decide(rec.rule, cand, ref, reference_experiment=best, noise=noise, sizes=rec.sizes)


def judge(
    rec: VerdictRecord,
    ev: Evidence,
    n: int,
    metrics: dict[str, float] | None = None,
    constraints: Sequence[Any] = (),
) -> Verdict:
    """The verdict `rec` and the values behind it give for experiment `n`. The loop calls
    it after each stage it measured; `overnight verify` calls it on the stored record.
    `constraints`: ConstraintConfig objects for a record of the constraint stage."""
    if rec.stage == "baseline":
        return Verdict("keep", "baseline")
    if rec.stage == "failure":
        found = failure_of(ev.runs(n, "run"), rec.locked_changed)
        if found is None:
            raise LookupError("recorded as a failure, but every stored run succeeded")
        return found
    if rec.stage == "constraint":
        from overnight.judging.constraints import check_constraints

        broken = check_constraints(metrics or {}, constraints)
        if broken is None:
            raise LookupError("recorded as a broken constraint, but every constraint holds")
        return broken
    first = metric_decision(rec, ev, n)
    if first.status != "keep":
        return first.verdict
    reason = first.reason
    if rec.sentinel is not None:
        suspect = _sentinels(rec, ev, n, first)
        if suspect is not None:
            return suspect
    if rec.confirm is not None:
        if rec.confirm.failed:
            failed = failure_of(ev.runs(n, "confirm"))
            why = failed.reason if failed else (rec.confirm.reason or rec.confirm.failed)
            return Verdict("rejected", f"the confirming re-run failed ({rec.confirm.failed}): "
                           f"{why}")  # fmt: skip
        assert rec.rule is not None and rec.reference is not None
        best, ref = reference_values(rec, ev)
        noise = Noise(rec.noise.sd, rec.noise.df) if rec.noise else None
        values = ev.values(rec.confirm.ids, n, ["confirm"])
        again = decide(rec.rule, values, ref, reference_experiment=best, noise=noise,
                       sizes=rec.sizes)  # fmt: skip
        if not confirms(first, again):
            return Verdict("rejected", f"the confirming re-run did not hold: {again.reason}")
        reason = f"{first.reason}; confirmed by a re-run: {again.reason}"
    if rec.hold:
        return Verdict("suspect", f"{reason}; {sentinels.HELD}: {rec.hold}")
    if rec.holdout is not None:
        verdict = _holdout(rec, ev, n)
        if verdict is not None:
            return verdict
    if rec.stale:
        assert rec.reference is not None
        return Verdict("discard", f"beat experiment {rec.reference.experiment}, but {rec.stale}")
    return Verdict("keep", reason)


def _sentinels(rec: VerdictRecord, ev: Evidence, n: int, first: Decision) -> Verdict | None:
    s = rec.sentinel
    assert s is not None and rec.rule is not None

    def walls(rows: Sequence[RunRow], ids: Sequence[int]) -> list[float]:
        wanted = set(ids)
        return [r.wall_s for r in rows if r.id in wanted and r.wall_s is not None]

    base = walls(ev.runs(0, "run"), s.baseline_ids) if s.wall_ratio > 0 else []
    cand = walls(ev.runs(n, "run"), rec.candidate) if base else []
    return sentinels.check(s, first, rec.rule.name, cand, base)


def _holdout(rec: VerdictRecord, ev: Evidence, n: int) -> Verdict | None:
    """The holdout gate of a would-be keep (None: it passes). Reasons carry no holdout
    numbers: they are shown to the proposer."""
    h = rec.holdout
    assert h is not None and rec.reference is not None
    rows = {r.id: r for r in ev.runs(n, "holdout")}
    row = rows.get(h.ids[0]) if h.ids else None
    if row is None or failure_status(row.timed_out, row.exit_code, row.value is not None):
        why = (row.error if row is not None else None) or "no value"
        return Verdict("rejected", f"the holdout evaluation failed ({why}); the keep cannot be "
                       "verified")  # fmt: skip
    if h.reference_ids:
        (reference,) = ev.values(h.reference_ids, rec.reference.experiment, ["holdout"])
        assert row.value is not None
        if holdout_regressed(row.value, reference, h.goal, h.tolerance):
            return Verdict("rejected", f"the holdout regressed beyond [holdout].tolerance "
                           f"({h.tolerance:g}) against experiment {rec.reference.experiment}")
    return None
