"""The `tune` proposer: an offline search over the numeric knobs of the surface.

Each proposal is one of two moves, chosen by Thompson sampling on how often each kind was
kept so far:

- local: a Gaussian step from the centre (the best, or the latest point that tied it) in a
  few knobs, inside a trust region that grows on success, shrinks after a run of failures
  and restarts once it has collapsed;
- global: the joint suggestion of Optuna's multivariate TPE over all knobs at once (random
  draws until it has `n_startup_trials` results), which crosses between coupled knobs.

Both kinds go into ONE Optuna study, one trial per experiment: a proposal carries its
trial's id, so its result is told to that very trial even after the loop re-based it onto a
newer best. Everything else is rebuilt from the ledger on start-up, so a restarted study
continues where it stopped. Experiment 0 (the baseline) has no proposal meta: its knob
values are those of the first surface this proposer sees while the best is experiment 0,
and every proposal carries them in `meta["baseline"]` for a restarted proposer.
"""

from __future__ import annotations

import math
import os
import random
import threading
from pathlib import Path
from typing import Any

from overnight.errors import UsageError
from overnight.proposers.base import BaseProposer, Context, nothing_to_propose
from overnight.proposers.tune.knobs import Knob, Number, apply_values, find_knobs, format_value
from overnight.proposers.tune.rebase import discover, reset_knobs
from overnight.proposers.tune.search import MoveChooser, TrustRegion, local_move, repair
from overnight.proposers.tune.space import Space, build_space
from overnight.proposers.tune.spec import KnobRules, KnobSpec, resolve
from overnight.proposers.tune.trials import MODELS, TrialBook
from overnight.store.records import ExperimentRecord, Proposal

NO_KNOBS = (
    "tune found no numeric knobs in the surface: declare what it may tune as UPPER_CASE "
    "numeric constants at the top level of a .py surface (e.g. LR = 0.01, BETAS = (0.9, "
    "0.95)), or as numbers in a TOML/YAML/JSON surface; or use a proposer that edits code "
    "(--proposer llm or agent)"
)
MAX_ATTEMPTS = 20
MEASURED = ("keep", "discard")
N_STARTUP = 5  # random joint draws before TPE models; the benchmark gives Optuna the same

Params = dict[str, Number]


def _key(params: Params) -> tuple[tuple[str, Number], ...]:
    return tuple(sorted(params.items()))


class TuneProposer(BaseProposer):
    """A trust region around the best plus Optuna's joint model, over the surface's knobs."""

    name = "tune"

    def __init__(self, seed: int = 0, **options: Any) -> None:
        self.seed = seed
        cfg = options.pop("config", None)
        self.rules = KnobRules.from_config(getattr(cfg, "proposer", None))
        self.n_startup_trials = int(options.pop("n_startup_trials", N_STARTUP))
        self.sampler = str(options.pop("sampler", "tpe"))
        self.options = options  # other keys of a shared config are ignored
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._session = os.urandom(4).hex()  # tells this process's trials from a restart's
        self._book: TrialBook | None = None
        self._spaces: dict[str, Space] = {}
        self._baseline: Params | None = None  # experiment 0's knob values, when known
        self._told: set[int] = set()  # experiments given to Optuna, or known to be unusable
        self._pending: dict[str, int] = {}  # meta["trial"] -> the trial it was asked as
        self._seen: set[tuple[tuple[str, Number], ...]] = set()
        self._unsynced: list[ExperimentRecord] = []  # observed before the study existed
        self._region = TrustRegion()
        # A fixed share of local moves instead of the adaptive choice (for measurements).
        self._chooser = MoveChooser(share=options.pop("local_share", None))
        # Joint (random) draws only until the model has its start-up trials, then the
        # adaptive choice: measured in Q3 against the default (no warm-up), not adopted
        # (docs/proposers/tune.md). Off with a fixed share.
        warmup = options.pop("warmup", False)
        self._warmup = bool(warmup) and self._chooser.share is None
        self._best: float | None = None  # the value of the latest keep
        self._ties: list[tuple[int, Params]] = []  # not worse than the best, since it
        if cfg is not None:
            self._check_comments(cfg)

    @property
    def study(self) -> Any:
        """The Optuna study (None before the first proposal)."""
        return None if self._book is None else self._book.study

    def describe(self) -> str:
        model = MODELS.get(self.sampler, self.sampler)
        where = f" over {len(self._spaces)} knobs" if self._spaces else ""
        return f"tune (trust region + Optuna {model}{where}, seed {self.seed})"

    def _check_comments(self, cfg: Any) -> None:
        """A malformed `tune:` comment in the surface is a usage error before the night."""
        root = Path(getattr(cfg, "root", "."))
        for pattern in getattr(getattr(cfg, "study", None), "surface", []):
            for path in sorted(root.glob(pattern)):
                if not path.is_file():
                    continue
                try:
                    text = path.read_text(encoding="utf-8")
                except (OSError, UnicodeDecodeError):
                    continue
                rel = path.relative_to(root).as_posix()
                try:
                    self.rules.specs_for({k.name: k for k in find_knobs(rel, text)})
                except ValueError as exc:
                    raise UsageError(str(exc)) from None

    def spaces_for(self, surface: dict[str, str]) -> dict[str, Space]:
        """The ranges a fresh search over `surface` starts from (declared or default; the
        benchmark gives every method these)."""
        knobs = discover(surface)
        specs = self.rules.specs_for(knobs)
        return {
            k: build_space(knob, specs[k]) for k, knob in knobs.items()
            if self.rules.tuned(k, specs[k])
        }

    # --- the two hooks ---------------------------------------------------------------------

    def propose(self, ctx: Context) -> Proposal:
        with self._lock:
            knobs = discover(ctx.surface)
            if not knobs:
                return nothing_to_propose(self.name, "tune: no knobs", NO_KNOBS)
            try:
                specs = self.rules.specs_for(knobs)
            except ValueError as exc:
                return self._invalid("tune: bad knob declaration", str(exc))
            current = {k: knob.value for k, knob in knobs.items()}
            self._start(ctx, current)
            self._make_spaces(ctx, knobs, specs)
            records, self._unsynced = [*ctx.history, *self._unsynced], []
            for record in sorted(records, key=lambda r: r.experiment):
                self._sync(record, ctx, current)
            self._seen.add(_key(current))
            tunable = [
                k for k, knob in knobs.items()
                if k in self._spaces and self._spaces[k].kind == knob.kind
                and self._widen(k, knob.value)
            ]
            if not tunable:
                reason = (
                    "tune cannot move any knob: every knob is excluded ([proposer] include/"
                    "exclude, `tune: off`, or a default such as *SEED*)"
                    if not self._spaces else
                    "tune cannot move any knob: their values left the ranges (sign or"
                    " int/float type changed) the search was set up with"
                )
                return nothing_to_propose(self.name, "tune: no movable knobs", reason)
            centre = self._centre(current, tunable)
            for k in tunable:
                if self._spaces[k].grow(centre[k]):
                    self._rebuild()
            divides = {k: resolve(specs[k].divides, knobs) for k in tunable if specs[k].divides}
            book = self._book
            assert book is not None
            trial: int | None = None  # a global move's trial, reused if its values repeat
            for attempt in range(MAX_ATTEMPTS):
                if attempt >= MAX_ATTEMPTS // 2:
                    move = "local"
                elif self._warmup and book.completed() < self.n_startup_trials:
                    move = "global"
                else:
                    move = self._chooser.choose(self._rng)
                if move == "global" and trial is None:
                    params, trial = book.ask(tunable)
                else:
                    move, params = "local", self._ask_local(centre, tunable, attempt)
                candidate = {**current, **repair(params, self._spaces, divides)}
                if _key(candidate) in self._seen:
                    continue
                trial = book.pin(trial, {k: candidate[k] for k in tunable})
                self._seen.add(_key(candidate))
                token = f"{self._session}:{trial}"
                self._pending[token] = trial
                return self._proposal(ctx, knobs, current, candidate, move, token)
            if trial is not None:
                book.tell(trial, {}, None)
            return self._invalid(
                "tune: search space exhausted",
                f"tune found no untried knob values in {MAX_ATTEMPTS} attempts",
            )

    def rebase(self, proposal: Proposal, surface: dict[str, str]) -> dict[str, str] | None:
        return reset_knobs(proposal, surface)

    def observe(self, result: ExperimentRecord) -> None:
        with self._lock:
            if self._book is None:
                self._unsynced.append(result)
            else:
                self._sync(result, None, None)

    # --- knobs and their spaces -----------------------------------------------------------

    def _invalid(self, description: str, reason: str) -> Proposal:
        return Proposal(files={}, description=description, invalid_reason=reason,
                        proposer=self.name)  # fmt: skip

    def _make_spaces(
        self, ctx: Context, knobs: dict[str, Knob], specs: dict[str, KnobSpec]
    ) -> None:
        """A space per tuned knob, centred on the baseline value and stretched over every
        value the ledger holds; rebuilt into Optuna whenever a range changes."""
        new = [k for k in knobs if k not in self._spaces and self.rules.tuned(k, specs[k])]
        seen_values: dict[str, list[Number]] = {}
        for record in ctx.history if new else ():
            for k, v in _params(record).items():
                seen_values.setdefault(k, []).append(v)
        for k in new:
            knob = knobs[k]
            centre = (self._baseline or {}).get(k, knob.value)
            try:
                space = build_space(Knob(k, knob.path, centre, knob.kind, text=knob.text), specs[k])
            except ValueError:
                continue
            values = [knob.value, *seen_values.get(k, [])]
            if all(space.fixed or space.widen(v) for v in values):
                self._spaces[k] = space
                self._rebuild()

    def _widen(self, k: str, value: Number) -> bool:
        space = self._spaces[k]
        bounds = (space.low, space.high)
        ok = space.fixed or space.widen(value)
        if (space.low, space.high) != bounds:
            self._rebuild()
        return ok

    # --- one Optuna study -----------------------------------------------------------------

    def _start(self, ctx: Context, current: Params) -> None:
        if self._book is not None:
            return
        direction = "maximize" if ctx.goal == "maximize" else "minimize"
        self._book = TrialBook(self._spaces, direction, self.sampler, self.seed,
                               self.n_startup_trials)  # fmt: skip
        for record in ctx.history:
            baseline = record.meta.get("baseline") if isinstance(record.meta, dict) else None
            if isinstance(baseline, dict) and baseline:
                self._baseline = {k: v for k, v in baseline.items() if type(v) in (int, float)}
                return
        if ctx.best_experiment == 0:
            self._baseline = dict(current)

    def _rebuild(self) -> None:
        if self._book is not None:
            self._book.rebuild()

    def _ask_local(self, centre: Params, tunable: list[str], attempt: int) -> Params:
        """A step in the trust region; repeated duplicates widen it and move more knobs."""
        radius = self._region.radius * (1 + attempt / 4)
        moved = local_move(centre, self._spaces, tunable, radius, self._rng, attempt // 4)
        return {k: moved[k] for k in tunable}

    def _sync(self, record: ExperimentRecord, ctx: Context | None, current: Params | None) -> None:
        """Give one decided experiment to Optuna and to the trust region, once."""
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
        for k, v in params.items():
            if k in self._spaces:
                self._widen(k, v)
        value = record.value
        if record.status not in MEASURED or value is None or not math.isfinite(value):
            value = None
        self._learn(record, params, value)
        meta = record.meta if isinstance(record.meta, dict) else {}
        trial = self._pending.pop(str(meta.get("trial")), None)
        assert self._book is not None
        if trial is not None:
            self._book.tell(trial, params, value)  # re-based: the values it measured
        else:
            self._book.add(params, value)

    # --- the trust region -----------------------------------------------------------------

    def _learn(self, record: ExperimentRecord, params: Params, value: float | None) -> None:
        """Move the centre, and grow or shrink the region, from one result (in order)."""
        meta = record.meta if isinstance(record.meta, dict) else {}
        move = str(meta.get("move", ""))
        if record.status == "keep" and value is not None:
            outcome = "better"
        elif value is not None and self._best is not None and not self._better(self._best, value):
            outcome = "tie"  # measured and not worse than the best: a plateau
        else:
            outcome = "worse"
        if outcome == "better":
            self._best, self._ties = value, []
        elif outcome == "tie":
            self._ties.append((record.experiment, params))
        if record.experiment > 0 and move:
            self._chooser.record(move, outcome == "better")
            if move == "local":
                self._region.update(outcome, max(1, len(self._spaces)))

    def _better(self, a: float, b: float) -> bool:
        maximize = self._book is not None and self._book.direction == "maximize"
        return a > b if maximize else a < b

    def _centre(self, current: Params, tunable: list[str]) -> Params:
        """Where local moves start: the best, or the latest point that tied it (a plateau
        move, so a count metric can drift across ties)."""
        centre = dict(current)
        if self._ties:
            centre.update({k: v for k, v in self._ties[-1][1].items() if k in centre})
        return {k: v for k, v in centre.items() if k not in tunable or
                self._spaces[k].inner(v) is not None or self._spaces[k].fixed}  # fmt: skip

    # --- one proposal ---------------------------------------------------------------------

    def _proposal(
        self, ctx: Context, knobs: dict[str, Knob], current: Params, candidate: Params,
        move: str, token: str,
    ) -> Proposal:  # fmt: skip
        changed = [k for k in knobs if candidate[k] != current[k]]
        per_file: dict[str, dict[str, Number]] = {}
        for k in changed:
            per_file.setdefault(knobs[k].path, {})[knobs[k].name] = candidate[k]
        files = {
            path: apply_values(path, ctx.surface[path], values)
            for path, values in per_file.items()
        }
        description = _describe(changed, knobs, current, candidate)
        assert self._book is not None
        if move == "local":
            rationale = (f"Local step (trust-region radius {self._region.radius:.3g}) from the"
                         f" current best (experiment {ctx.best_experiment}).")  # fmt: skip
        elif self._book.completed() >= self.n_startup_trials:
            rationale = f"Joint suggestion of Optuna's {self.describe().split('Optuna ')[1]}."
        else:
            rationale = "Random joint draw while the model warms up."
        meta: dict[str, Any] = {
            "params": dict(candidate), "changed": changed, "trial": token, "move": move,
        }
        if self._baseline:
            meta["baseline"] = dict(self._baseline)
        return Proposal(
            files=files, description=description, rationale=rationale,
            hypothesis=f"{ctx.metric} gets better with {description}.", meta=meta,
            proposer=self.name,
        )  # fmt: skip


def _describe(changed: list[str], knobs: dict[str, Knob], old: Params, new: Params) -> str:
    return ", ".join(
        f"{k} {format_value(old[k], knobs[k].kind)} → {format_value(new[k], knobs[k].kind)}"
        for k in changed
    )


def _params(record: ExperimentRecord) -> Params:
    meta = record.meta if isinstance(record.meta, dict) else {}
    params = meta.get("params")
    if not isinstance(params, dict):
        return {}
    return {k: v for k, v in params.items() if type(v) in (int, float) and math.isfinite(v)}
