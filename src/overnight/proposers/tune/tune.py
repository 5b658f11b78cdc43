"""The `tune` proposer: an offline search over the numeric knobs of the surface.

Each proposal starts from the current best and moves a few knobs (usually one) to values
suggested by Optuna's TPE sampler; the loop then keeps or discards it like any other
proposal. Everything the sampler learns is rebuilt from the ledger history on start-up, so
a restarted study continues where it stopped instead of re-trying old settings.

Experiment 0 (the baseline) has no proposal meta. Its parameters are the knob values of the
first surface this proposer sees while the best is still experiment 0; they are written
into every proposal's `meta["baseline"]`, which is where a restarted proposer finds them
(and the centres of the search spaces) again.
"""

from __future__ import annotations

import math
import random
import threading
import warnings
from dataclasses import dataclass
from typing import Any

import optuna
from optuna.distributions import BaseDistribution, FloatDistribution, IntDistribution
from optuna.trial import Trial, TrialState

from overnight.proposers.base import BaseProposer, Context, nothing_to_propose
from overnight.proposers.tune.knobs import Knob, Number, apply_values, format_value
from overnight.proposers.tune.knobs import round_value as _round
from overnight.proposers.tune.rebase import discover, reset_knobs
from overnight.store.records import ExperimentRecord, Proposal

NO_KNOBS = (
    "tune found no numeric knobs in the surface: declare what it may tune as UPPER_CASE "
    "numeric constants at the top level of a .py surface (e.g. LR = 0.01), or as numbers in a "
    "TOML/YAML/JSON surface; or use a proposer that edits code (--proposer llm or agent)"
)
MAX_ATTEMPTS = 20
MEASURED = ("keep", "discard")

Params = dict[str, Number]

optuna.logging.set_verbosity(optuna.logging.WARNING)
warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)


def _key(params: Params) -> tuple[tuple[str, Number], ...]:
    return tuple(sorted(params.items()))


@dataclass
class _Space:
    """Where one knob is searched. Optuna sees `sign * value`, so a negative knob gets the
    same log-scale search as a positive one."""

    kind: str
    low: Number
    high: Number
    log: bool
    sign: int = 1

    @classmethod
    def around(cls, value: Number, kind: str) -> _Space:
        sign, v = (-1 if value < 0 else 1), abs(value)
        if v == 0:
            return cls(kind, 0, 10, False) if kind == "int" else cls(kind, 0.0, 1.0, False)
        if kind == "int":
            v = int(v)
            return cls(kind, max(1, v // 4), max(v * 4, v + 4), True, sign)
        # Rounded bounds, so a rounded suggestion can always be clamped onto a bound.
        return cls(kind, _round(v / 10, "float"), _round(v * 10, "float"), True, sign)

    def widen(self, value: Number) -> bool:
        """Stretch to contain `value`; False when it cannot (the sign does not fit)."""
        inner = self.sign * value
        if inner < 0 or (self.log and inner <= 0):
            return False
        self.low, self.high = min(self.low, inner), max(self.high, inner)
        return True

    def distribution(self) -> BaseDistribution:
        if self.kind == "int":
            return IntDistribution(int(self.low), int(self.high), log=self.log)
        return FloatDistribution(float(self.low), float(self.high), log=self.log)

    def to_optuna(self, value: Number) -> Number:
        inner = self.sign * value
        return int(inner) if self.kind == "int" else float(inner)

    def from_optuna(self, inner: Number) -> Number:
        inner = min(max(inner, self.low), self.high)
        rounded = _round(inner, self.kind)  # type: ignore[arg-type]
        rounded = min(max(rounded, self.low), self.high)
        return _round(self.sign * rounded, self.kind)  # type: ignore[arg-type]


class TuneProposer(BaseProposer):
    """Optuna TPE over the surface's numeric knobs, one small move from the best at a time."""

    name = "tune"

    def __init__(self, seed: int = 0, **options: Any) -> None:
        self.seed = seed
        # Few startup trials: every proposal is already a local move from the best, so the
        # model is worth using early. Other options (from a shared config) are ignored.
        self.n_startup_trials = int(options.pop("n_startup_trials", 5))
        self.options = options
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._study: optuna.Study | None = None
        self._spaces: dict[str, _Space] = {}
        self._baseline: Params | None = None  # experiment 0's knob values, when known
        self._told: set[int] = set()  # experiments given to Optuna, or known to be unusable
        self._pending: dict[tuple[tuple[str, Number], ...], Trial] = {}
        self._seen: set[tuple[tuple[str, Number], ...]] = set()
        self._unsynced: list[ExperimentRecord] = []  # observed before the study existed

    @property
    def study(self) -> optuna.Study | None:
        return self._study

    def describe(self) -> str:
        if not self._spaces:
            return f"tune (Optuna TPE, seed {self.seed})"
        return f"tune (Optuna TPE over {len(self._spaces)} knobs, seed {self.seed})"

    # --- the two hooks ---------------------------------------------------------------------

    def propose(self, ctx: Context) -> Proposal:
        with self._lock:
            knobs = discover(ctx.surface)
            if not knobs:
                return nothing_to_propose(self.name, "tune: no knobs", NO_KNOBS)
            current = {k: knob.value for k, knob in knobs.items()}
            self._start(ctx, current)
            self._make_spaces(ctx, knobs)
            records, self._unsynced = [*ctx.history, *self._unsynced], []
            for record in records:
                self._sync(record, ctx, current)
            self._seen.add(_key(current))
            tunable = [
                k for k, knob in knobs.items()
                if k in self._spaces and self._spaces[k].kind == knob.kind
                and self._spaces[k].widen(knob.value)
            ]
            if not tunable:
                return nothing_to_propose(
                    self.name, "tune: no movable knobs",
                    "tune cannot move any knob: their values left the ranges (sign or "
                    "int/float type changed) the search was set up with; start a new study "
                    "(another [study].name) or use another proposer (--proposer llm|agent)",
                )  # fmt: skip
            for attempt in range(MAX_ATTEMPTS):
                candidate, trial = self._ask(current, tunable, attempt)
                if _key(candidate) in self._seen:
                    # Told as failed, not left running: a running trial would steer TPE.
                    self._tell(trial, None)
                    continue
                self._seen.add(_key(candidate))
                self._pending[_key(candidate)] = trial
                return self._proposal(ctx, knobs, current, candidate)
            return Proposal(
                files={}, description="tune: search space exhausted", proposer=self.name,
                invalid_reason=f"tune found no untried knob values in {MAX_ATTEMPTS} attempts",
            )

    def rebase(self, proposal: Proposal, surface: dict[str, str]) -> dict[str, str] | None:
        return reset_knobs(proposal, surface)

    def observe(self, result: ExperimentRecord) -> None:
        with self._lock:
            if self._study is None:
                self._unsynced.append(result)
            else:
                self._sync(result, None, None)

    # --- state built from the context -----------------------------------------------------

    def _start(self, ctx: Context, current: Params) -> None:
        if self._study is not None:
            return
        direction = "maximize" if ctx.goal == "maximize" else "minimize"
        sampler = optuna.samplers.TPESampler(
            seed=self.seed, n_startup_trials=self.n_startup_trials
        )
        self._study = optuna.create_study(direction=direction, sampler=sampler)
        for record in ctx.history:
            baseline = record.meta.get("baseline") if isinstance(record.meta, dict) else None
            if isinstance(baseline, dict) and baseline:
                self._baseline = {
                    k: v for k, v in baseline.items() if type(v) in (int, float)
                }
                return
        if ctx.best_experiment == 0:
            self._baseline = dict(current)

    def _make_spaces(self, ctx: Context, knobs: dict[str, Knob]) -> None:
        """A space per knob, fixed once made so that Optuna's history stays comparable;
        centred on the baseline value and stretched over every value the ledger holds."""
        seen_values: dict[str, list[Number]] = {}
        for record in ctx.history:
            for k, v in _params(record).items():
                seen_values.setdefault(k, []).append(v)
        for k, knob in knobs.items():
            if k in self._spaces:
                continue
            centre = (self._baseline or {}).get(k, knob.value)
            space = _Space.around(centre, knob.kind)
            values = [knob.value, *seen_values.get(k, [])]
            if all(space.widen(v) for v in values):
                self._spaces[k] = space

    def _sync(self, record: ExperimentRecord, ctx: Context | None, current: Params | None) -> None:
        """Give one decided experiment to Optuna, once."""
        if record.experiment in self._told or record.status is None:
            return
        params = _params(record)
        if not params and record.experiment == 0 and self._baseline:
            params = dict(self._baseline)
        if not params and ctx is not None and current is not None:
            if record.experiment == ctx.best_experiment:
                params = dict(current)  # kept by another proposer: the surface shows it
        if not params:
            if ctx is not None:  # a later propose() cannot learn more about it either
                self._told.add(record.experiment)
            return
        self._told.add(record.experiment)
        self._seen.add(_key(params))
        value = record.value
        if record.status not in MEASURED or value is None or not math.isfinite(value):
            value = None
        trial = self._pending.pop(_key(params), None)
        if trial is not None:
            self._tell(trial, value)
            return
        inner, dists = {}, {}
        for k, v in params.items():
            space = self._spaces.get(k)
            if space is not None and space.widen(v):
                inner[k], dists[k] = space.to_optuna(v), space.distribution()
        if not inner:
            return
        state = TrialState.COMPLETE if value is not None else TrialState.FAIL
        assert self._study is not None
        self._study.add_trial(
            optuna.trial.create_trial(state=state, value=value, params=inner, distributions=dists)
        )

    # --- one candidate --------------------------------------------------------------------

    def _ask(self, current: Params, tunable: list[str], attempt: int) -> tuple[Params, Trial]:
        """Optuna samples only the moved knobs; the others are pinned to the best's values.
        Repeated duplicates widen the move, so a crowded neighbourhood is left."""
        assert self._study is not None
        roll = self._rng.random()
        size = (1 if roll < 0.6 else 2 if roll < 0.85 else 3) + attempt // 5
        moved = set(self._rng.sample(tunable, min(len(tunable), size)))
        pinned = {k: self._spaces[k].to_optuna(current[k]) for k in tunable if k not in moved}
        if pinned:
            self._study.enqueue_trial(pinned)
        trial = self._study.ask({k: self._spaces[k].distribution() for k in tunable})
        candidate = dict(current)
        for k in moved:
            candidate[k] = self._spaces[k].from_optuna(trial.params[k])
        return candidate, trial

    def _tell(self, trial: Trial, value: float | None) -> None:
        assert self._study is not None
        if value is None:
            self._study.tell(trial, state=TrialState.FAIL)
        else:
            self._study.tell(trial, value)

    def _proposal(
        self, ctx: Context, knobs: dict[str, Knob], current: Params, candidate: Params
    ) -> Proposal:
        changed = [k for k in knobs if candidate[k] != current[k]]
        per_file: dict[str, dict[str, Number]] = {}
        for k in changed:
            per_file.setdefault(knobs[k].path, {})[knobs[k].name] = candidate[k]
        files = {
            path: apply_values(path, ctx.surface[path], values)
            for path, values in per_file.items()
        }
        description = ", ".join(
            f"{k} {format_value(current[k], knobs[k].kind)}"
            f" → {format_value(candidate[k], knobs[k].kind)}"
            for k in changed
        )
        assert self._study is not None
        complete = self._study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        warm = len(complete) >= self.n_startup_trials
        where = f"around the current best (experiment {ctx.best_experiment})"
        rationale = f"TPE suggestion {where}." if warm else (
            f"Random step {where} while TPE warms up."
        )
        meta: dict[str, Any] = {"params": dict(candidate), "changed": changed}
        if self._baseline:
            meta["baseline"] = dict(self._baseline)
        return Proposal(
            files=files,
            description=description,
            rationale=rationale,
            hypothesis=f"{ctx.metric} gets better with {description}.",
            meta=meta,
            proposer=self.name,
        )


def _params(record: ExperimentRecord) -> Params:
    meta = record.meta if isinstance(record.meta, dict) else {}
    params = meta.get("params")
    if not isinstance(params, dict):
        return {}
    return {k: v for k, v in params.items() if type(v) in (int, float) and math.isfinite(v)}
