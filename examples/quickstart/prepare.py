"""DO NOT CHANGE — the locked evaluation.

The data and the validation metric of the quickstart study. `overnight` treats this file as
locked: every proposal may change only `train.py`, and this file must stay byte-identical,
so every experiment is judged by the same data and the same yardstick.

The task is a small nonlinear regression: 6 input features drawn uniformly from [-1, 1],
a target that is a sum of 12 waves (broad, strong ones that are easy to learn down to
narrow, weak ones that are hard) and Gaussian noise; 4000 training and 1000 validation
points. Everything comes from a fixed seed (no environment variable changes it), so every
run of every experiment sees exactly the same points.

    load_data()            -> (x_train, y_train, x_val, y_val), float64, y of shape (n, 1)
    evaluate(predict_fn)   -> validation mean squared error (lower is better)

The target is scaled so that always predicting the mean scores about 1.0; the noise alone
costs about 0.01, so no model can score much below that.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

N_FEATURES = 6
N_TRAIN = 4000
N_VAL = 1000
NOISE_STD = 0.1
N_WAVES = 12
DATA_SEED = 20240601  # fixed on purpose: the data never change between runs

_CACHE: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None = None


def _target(x: np.ndarray) -> np.ndarray:
    """The noiseless function the model has to learn (before scaling): a sum of waves,
    from broad, strong ones (easy) to narrow, weak ones (hard)."""
    rng = np.random.Generator(np.random.PCG64(DATA_SEED + 1))
    f = np.zeros(len(x))
    for j in range(N_WAVES):
        direction = rng.standard_normal(x.shape[1])
        direction /= np.linalg.norm(direction)
        frequency = 1.0 + 0.5 * j
        phase = rng.uniform(0.0, 2.0 * np.pi)
        f += np.sin(frequency * (x @ direction) + phase) / (1.0 + 0.35 * j)
    return f


def _make() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.Generator(np.random.PCG64(DATA_SEED))
    n = N_TRAIN + N_VAL
    x = rng.uniform(-1.0, 1.0, size=(n, N_FEATURES))
    f = _target(x)
    # Scale so the clean target has mean 0 and variance ~0.99; with the noise, variance ~1.
    f = (f - f.mean()) / f.std() * np.sqrt(1.0 - NOISE_STD**2)
    y = f + NOISE_STD * rng.standard_normal(n)
    y = y.reshape(-1, 1)
    return x[:N_TRAIN], y[:N_TRAIN], x[N_TRAIN:], y[N_TRAIN:]


def load_data() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Return copies of (x_train, y_train, x_val, y_val)."""
    global _CACHE
    if _CACHE is None:
        _CACHE = _make()
    return tuple(a.copy() for a in _CACHE)  # type: ignore[return-value]


def evaluate(predict_fn: Callable[[np.ndarray], np.ndarray]) -> float:
    """Validation mean squared error of `predict_fn` (lower is better).

    `predict_fn` gets the validation inputs, shape (N_VAL, N_FEATURES), and must return one
    prediction per row. Anything else, or a non-finite prediction, scores nan (a crash).
    """
    _, _, x_val, y_val = load_data()
    pred = np.asarray(predict_fn(x_val), dtype=np.float64)
    if pred.size != y_val.size:
        return float("nan")
    pred = pred.reshape(y_val.shape)
    if not np.all(np.isfinite(pred)):
        return float("nan")
    return float(np.mean((pred - y_val) ** 2))
