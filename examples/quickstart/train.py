"""Train a tiny two-hidden-layer MLP on the quickstart data (numpy only).

This file is the SURFACE of the quickstart study: proposals change it, and nothing else.
The knobs below are set poorly on purpose, so there is a lot to gain.

Prints, each alone on a line:
    val_loss: <validation MSE from prepare.evaluate>   (the metric; lower is better)
    train_loss: <training MSE>
    train_seconds: <wall time of the training loop>
"""

import os
import time

import numpy as np
from prepare import evaluate, load_data

# --- hyperparameters (plain literals: the tuner rewrites them) ---------------------------
LEARNING_RATE = 0.001  # Adam step size
MOMENTUM = 0.5  # Adam beta1 (momentum of the gradient average)
HIDDEN = 4  # units in each of the two hidden layers
BATCH_SIZE = 512  # examples per step
STEPS = 300  # optimizer steps
WEIGHT_DECAY = 0.01  # L2 penalty on the weight matrices
INIT_SCALE = 1.0  # hidden-layer init std, in units of 1/sqrt(fan_in)
# ------------------------------------------------------------------------------------------

beta2 = 0.999  # Adam second-moment decay (lower case: not a knob for the tuner)
grad_clip = 10.0  # clip the global gradient norm: a guard against blow-ups


def main() -> None:
    seed = int(os.environ.get("OVERNIGHT_SEED", "0"))
    rng = np.random.default_rng(seed)
    x_train, y_train, _, _ = load_data()
    n, d = x_train.shape

    # Keep every knob in a range where the code runs, whatever a proposal writes.
    hidden = max(1, int(round(HIDDEN)))
    batch = min(n, max(1, int(round(BATCH_SIZE))))
    steps = max(1, int(round(STEPS)))
    beta1 = min(max(float(MOMENTUM), 0.0), 0.999)

    def init(fan_in: int, fan_out: int) -> np.ndarray:
        return rng.standard_normal((fan_in, fan_out)) * (INIT_SCALE / np.sqrt(fan_in))

    params = {
        "w1": init(d, hidden),
        "b1": np.zeros(hidden),
        "w2": init(hidden, hidden),
        "b2": np.zeros(hidden),
        "w3": np.zeros((hidden, 1)),  # start by predicting 0 (the mean of the target)
        "b3": np.zeros(1),
    }
    m = {k: np.zeros_like(p) for k, p in params.items()}  # Adam first moments
    v = {k: np.zeros_like(p) for k, p in params.items()}  # Adam second moments

    def forward(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        h1 = np.tanh(x @ params["w1"] + params["b1"])
        h2 = np.tanh(h1 @ params["w2"] + params["b2"])
        return h1, h2, h2 @ params["w3"] + params["b3"]

    def predict(x: np.ndarray) -> np.ndarray:
        return forward(x)[2]

    start = time.perf_counter()
    order = rng.permutation(n)
    cursor = 0
    diverged = False
    with np.errstate(over="ignore", invalid="ignore"):
        for t in range(1, steps + 1):
            if cursor + batch > n:  # next epoch: reshuffle
                order = rng.permutation(n)
                cursor = 0
            idx = order[cursor : cursor + batch]
            cursor += batch
            x, y = x_train[idx], y_train[idx]

            # forward and manual backprop of the mean squared error
            h1, h2, out = forward(x)
            g_out = 2.0 * (out - y) / batch
            grads = {"w3": h2.T @ g_out, "b3": g_out.sum(0)}
            g_h2 = (g_out @ params["w3"].T) * (1.0 - h2**2)
            grads["w2"], grads["b2"] = h1.T @ g_h2, g_h2.sum(0)
            g_h1 = (g_h2 @ params["w2"].T) * (1.0 - h1**2)
            grads["w1"], grads["b1"] = x.T @ g_h1, g_h1.sum(0)
            for k in ("w1", "w2", "w3"):
                grads[k] += WEIGHT_DECAY * params[k]

            norm = np.sqrt(sum(float(np.sum(g * g)) for g in grads.values()))
            if not np.isfinite(norm):
                diverged = True
                break
            clip = min(1.0, grad_clip / (norm + 1e-12))

            # Adam update
            for k, p in params.items():
                g = grads[k] * clip
                m[k] = beta1 * m[k] + (1.0 - beta1) * g
                v[k] = beta2 * v[k] + (1.0 - beta2) * g * g
                m_hat = m[k] / (1.0 - beta1**t)
                v_hat = v[k] / (1.0 - beta2**t)
                p -= LEARNING_RATE * m_hat / (np.sqrt(v_hat) + 1e-8)
    train_seconds = time.perf_counter() - start

    with np.errstate(over="ignore", invalid="ignore"):
        train_loss = float(np.mean((predict(x_train) - y_train) ** 2))
        val_loss = float("nan") if diverged else evaluate(predict)
    print(f"val_loss: {val_loss:.6f}")
    print(f"train_loss: {train_loss:.6f}")
    print(f"train_seconds: {train_seconds:.3f}")


if __name__ == "__main__":
    main()
