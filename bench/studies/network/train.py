"""A small neural network (scikit-learn's MLPClassifier) on the bundled 8x8 digits (a
held-out study of bench/search_quality.py: nobody tuned `tune` on it).

The surface of the study; the split and the metric below are the evaluation. Integer knobs
(width, depth, epochs, a power-of-two batch) and log-scale ones (step size, L2). Prints
`val_logloss: <number>` (lower is better).
"""

import warnings

import numpy as np
from sklearn.datasets import load_digits
from sklearn.metrics import log_loss
from sklearn.model_selection import train_test_split
from sklearn.neural_network import MLPClassifier

# The cost knobs have declared ranges (`tune:` comments), as for any fixed-budget study:
# every method searches only these, so no run grows past a second or two.
HIDDEN_UNITS = 12  # units per hidden layer; tune: 4..128
HIDDEN_LAYERS = 1  # depth; tune: 1..4
EPOCHS = 8  # passes over the training data; tune: 2..40
BATCH_SIZE = 64  # examples per step; tune: 16..256 pow2
LEARNING_RATE = 0.0005  # Adam step size
L2_PENALTY = 0.01  # weight decay (alpha)
SEED = 0  # a seed is not a hyperparameter: tune leaves it alone


def main() -> None:
    x, y = load_digits(return_X_y=True)
    x_train, x_val, y_train, y_val = train_test_split(
        x / 16.0, y, test_size=0.4, random_state=0, stratify=y
    )
    model = MLPClassifier(
        hidden_layer_sizes=(max(1, HIDDEN_UNITS),) * max(1, HIDDEN_LAYERS),
        max_iter=max(1, EPOCHS), batch_size=max(1, BATCH_SIZE),
        learning_rate_init=LEARNING_RATE, alpha=L2_PENALTY, random_state=SEED,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ConvergenceWarning: the epochs are the budget
        model.fit(x_train, y_train)
    proba = np.clip(model.predict_proba(x_val), 1e-15, 1.0)
    print(f"val_logloss: {log_loss(y_val, proba, labels=model.classes_):.6f}")


if __name__ == "__main__":
    main()
