"""The two searches `tune` is measured against in bench/search_quality.py, as overnight
proposer plug-ins so that they run through the same loop (`--proposer methods:Random...`):

- OptunaAloneProposer: one Optuna study with the default TPESampler over every knob at
  once, what a user gets from `optuna` directly: no trust region, no ratchet of its own.
- RandomProposer: every knob drawn at random at once.

Both search exactly the ranges `tune` starts from (`TuneProposer.spaces_for`: declared
ranges, default ranges, exclusions), know the baseline (experiment 0) as their first trial,
and Optuna gets the same number of start-up trials as `tune`.
"""

from __future__ import annotations

import math
import random
from typing import Any

import optuna
from optuna.trial import TrialState

from overnight.proposers.base import BaseProposer, Context
from overnight.proposers.tune.knobs import apply_values
from overnight.proposers.tune.rebase import discover, reset_knobs
from overnight.proposers.tune.tune import N_STARTUP, TuneProposer, _describe
from overnight.store.records import ExperimentRecord, Proposal

optuna.logging.set_verbosity(optuna.logging.WARNING)


class _JointProposer(BaseProposer):
    """Proposes every searched knob at once; subclasses draw the values."""

    def __init__(self, seed: int = 0, **options: Any) -> None:
        self.seed = seed
        self.tune = TuneProposer(seed=seed, config=options.get("config"))
        self.spaces: dict[str, Any] = {}
        self.goal = "minimize"
        self.told: set[int] = set()

    def draw(self, ctx: Context) -> tuple[dict[str, Any], str]:
        raise NotImplementedError

    def learn(self, record: ExperimentRecord, params: dict[str, Any]) -> None:
        """A decided experiment (params: the searched knobs' values)."""

    def propose(self, ctx: Context) -> Proposal:
        knobs = discover(ctx.surface)
        current = {k: knob.value for k, knob in knobs.items()}
        if not self.spaces:
            self.spaces, self.goal = self.tune.spaces_for(ctx.surface), ctx.goal
        for record in ctx.history:
            self._sync(record, current if record.experiment == 0 else None)
        params, token = self.draw(ctx)
        candidate = {**current, **params}
        changed = [k for k in self.spaces if k in knobs]  # all of them, also on a rebase
        per_file: dict[str, dict[str, Any]] = {}
        for k in changed:
            per_file.setdefault(knobs[k].path, {})[knobs[k].name] = candidate[k]
        files = {p: apply_values(p, ctx.surface[p], v) for p, v in per_file.items()}
        moved = [k for k in changed if candidate[k] != current[k]]
        return Proposal(
            files=files, description=_describe(moved, knobs, current, candidate) or "(none)",
            meta={"params": candidate, "changed": changed, "trial": token},
            proposer=self.name,
        )

    def rebase(self, proposal: Proposal, surface: dict[str, str]) -> dict[str, str] | None:
        return reset_knobs(proposal, surface)

    def observe(self, result: ExperimentRecord) -> None:
        self._sync(result, None)

    def _sync(self, record: ExperimentRecord, baseline: dict[str, Any] | None) -> None:
        if record.experiment in self.told or record.status is None:
            return
        meta = record.meta if isinstance(record.meta, dict) else {}
        params = meta.get("params") or baseline
        if not isinstance(params, dict):
            return
        self.told.add(record.experiment)
        self.learn(record, {k: v for k, v in params.items() if k in self.spaces})


class RandomProposer(_JointProposer):
    name = "random"

    def __init__(self, seed: int = 0, **options: Any) -> None:
        super().__init__(seed, **options)
        self.rng = random.Random(seed)

    def draw(self, ctx: Context) -> tuple[dict[str, Any], str]:
        return {k: s.from_unit(self.rng.random()) for k, s in self.spaces.items()}, ""


class OptunaAloneProposer(_JointProposer):
    name = "optuna"

    def __init__(self, seed: int = 0, **options: Any) -> None:
        super().__init__(seed, **options)
        self.study: optuna.Study | None = None
        self.pending: dict[str, int] = {}

    def _study(self) -> optuna.Study:
        if self.study is None:
            sampler = optuna.samplers.TPESampler(seed=self.seed, n_startup_trials=N_STARTUP)
            self.study = optuna.create_study(direction=self.goal, sampler=sampler)
        return self.study

    def draw(self, ctx: Context) -> tuple[dict[str, Any], str]:
        trial = self._study().ask({k: s.distribution() for k, s in self.spaces.items()})
        token = str(trial.number)
        self.pending[token] = trial.number
        return {k: s.value(trial.params[k]) for k, s in self.spaces.items()}, token

    def learn(self, record: ExperimentRecord, params: dict[str, Any]) -> None:
        study = self._study()
        ok = record.status in ("keep", "discard") and record.value is not None
        ok = ok and math.isfinite(record.value)  # type: ignore[arg-type]
        meta = record.meta if isinstance(record.meta, dict) else {}
        number = self.pending.pop(str(meta.get("trial")), None)
        if number is not None:
            study.tell(number, record.value if ok else None,
                       state=TrialState.COMPLETE if ok else TrialState.FAIL)  # fmt: skip
            return
        inner = {k: s.inner(params[k]) for k, s in self.spaces.items() if k in params}
        if not ok or any(v is None for v in inner.values()) or len(inner) < len(self.spaces):
            return
        study.add_trial(optuna.trial.create_trial(  # the baseline, "enqueued" with its value
            params=inner, distributions={k: s.distribution() for k, s in self.spaces.items()},
            value=record.value,
        ))  # fmt: skip


# --- variants of tune, for choosing its parts by measurement (--methods tune-cmaes,...) ---


class TuneCmaEsProposer(TuneProposer):
    def __init__(self, seed: int = 0, **options: Any) -> None:
        super().__init__(seed, sampler="cmaes", **options)


class TuneGPProposer(TuneProposer):
    def __init__(self, seed: int = 0, **options: Any) -> None:
        super().__init__(seed, sampler="gp", **options)


class TuneGlobalOnlyProposer(TuneProposer):
    def __init__(self, seed: int = 0, **options: Any) -> None:
        super().__init__(seed, local_share=0.0, **options)


class TuneLocalOnlyProposer(TuneProposer):
    def __init__(self, seed: int = 0, **options: Any) -> None:
        super().__init__(seed, local_share=1.0, **options)


class TuneWarmupProposer(TuneProposer):
    def __init__(self, seed: int = 0, **options: Any) -> None:
        super().__init__(seed, warmup=True, **options)
