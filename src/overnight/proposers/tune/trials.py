"""One Optuna study for `tune`, one trial per experiment.

A proposal's trial is created when the proposal is made (RUNNING: Optuna's constant liar
sees it, so run-ahead proposals spread out) and told when its experiment is decided, with
the values that were actually measured — a proposal re-based onto a newer best measures
other values than it was asked with, and its trial is corrected before it is told.
Experiments from before a restart, or from another proposer, are added as finished trials.
"""

from __future__ import annotations

import warnings
from typing import Any

import optuna
from optuna.trial import TrialState

from overnight.proposers.tune.knobs import Number
from overnight.proposers.tune.space import Space

Params = dict[str, Number]

optuna.logging.set_verbosity(optuna.logging.WARNING)
warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)

MODELS = {"tpe": "multivariate TPE", "cmaes": "CMA-ES", "gp": "GP"}


def make_sampler(name: str, seed: int, n_startup: int) -> optuna.samplers.BaseSampler:
    """The model behind global moves: "tpe" (multivariate, with the constant liar for
    run-ahead) is the default, chosen by measurement (docs/proposers/tune.md); "cmaes" needs
    the `cmaes` package, "gp" needs torch and scipy."""
    if name == "cmaes":
        return optuna.samplers.CmaEsSampler(seed=seed, n_startup_trials=n_startup)
    if name == "gp":
        return optuna.samplers.GPSampler(seed=seed, n_startup_trials=n_startup)
    return optuna.samplers.TPESampler(
        seed=seed, n_startup_trials=n_startup, multivariate=True, constant_liar=True
    )


class TrialBook:
    """The study and its trials, over the knobs' current spaces (`spaces` is shared with
    the proposer, which grows them; `rebuild()` follows)."""

    def __init__(self, spaces: dict[str, Space], direction: str, sampler: str, seed: int,
                 n_startup: int) -> None:  # fmt: skip
        self.spaces = spaces
        self.direction = direction
        self.sampler, self.seed, self.n_startup = sampler, seed, n_startup
        self.rebuilds = 0
        self.study = self._new_study()

    def _new_study(self) -> optuna.Study:
        sampler = make_sampler(self.sampler, self.seed + self.rebuilds, self.n_startup)
        return optuna.create_study(direction=self.direction, sampler=sampler)

    def rebuild(self) -> None:
        """The same trials (numbers, states, values, params) over the current spaces:
        Optuna compares trials only where their distributions agree. Ranges only grow, so
        every value still fits."""
        old, self.rebuilds = self.study, self.rebuilds + 1
        self.study = self._new_study()
        for t in old.get_trials(deepcopy=False):
            dists = {k: self.spaces[k].distribution() for k in t.params if k in self.spaces}
            self.study.add_trial(optuna.trial.create_trial(
                state=t.state, value=t.value, distributions=dists,
                params={k: v for k, v in t.params.items() if k in dists},
            ))  # fmt: skip

    def inner(self, params: Params) -> tuple[dict[str, Number], dict[str, Any]]:
        """Optuna's values and distributions for the knobs that have a space."""
        inner, dists = {}, {}
        for k, v in params.items():
            space = self.spaces.get(k)
            x = None if space is None else space.inner(v)
            if space is not None and x is not None:
                inner[k], dists[k] = x, space.distribution()
        return inner, dists

    def completed(self) -> int:
        return len(self.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))

    def ask(self, names: list[str]) -> tuple[Params, int]:
        """The model's joint suggestion over `names`, as a new RUNNING trial."""
        trial = self.study.ask({k: self.spaces[k].distribution() for k in names})
        return {k: self.spaces[k].value(trial.params[k]) for k in names}, trial.number

    def pin(self, number: int | None, params: Params) -> int:
        """The number of a RUNNING trial holding exactly `params` (a new one for None)."""
        study = self.study
        inner, dists = self.inner(params)
        if number is None:
            number = len(study.get_trials(deepcopy=False))
            study.add_trial(optuna.trial.create_trial(
                state=TrialState.RUNNING, params=inner, distributions=dists,
            ))  # fmt: skip
            return number
        trial = study.get_trials(deepcopy=False)[number]
        storage = study._storage
        trial_id = storage.get_trial_id_from_study_id_trial_number(study._study_id, number)
        for k, v in inner.items():
            if trial.params.get(k) != v:
                storage.set_trial_param(trial_id, k, dists[k].to_internal_repr(v), dists[k])
        return number

    def tell(self, number: int, params: Params, value: float | None) -> None:
        """Finish a trial with what its experiment measured (None: it failed)."""
        self.pin(number, params)
        if value is None:
            self.study.tell(number, state=TrialState.FAIL)
        else:
            self.study.tell(number, value)

    def add(self, params: Params, value: float | None) -> None:
        """A finished trial for an experiment this process did not ask for."""
        inner, dists = self.inner(params)
        if inner:
            state = TrialState.COMPLETE if value is not None else TrialState.FAIL
            self.study.add_trial(optuna.trial.create_trial(
                state=state, value=value, params=inner, distributions=dists,
            ))  # fmt: skip
