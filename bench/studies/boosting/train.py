"""Gradient boosting on scikit-learn's bundled breast-cancer data (a held-out study of
bench/search_quality.py: nobody tuned `tune` on it).

The surface of the study; the split and the metric below are the evaluation. Prints
`val_logloss: <number>` (lower is better).
"""

import warnings

from sklearn.datasets import load_breast_cancer
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.metrics import log_loss
from sklearn.model_selection import train_test_split

LEARNING_RATE = 0.3  # shrinkage of each tree's contribution
MAX_ITER = 50  # boosting rounds (trees); tune: 10..300
MAX_LEAF_NODES = 31  # leaves per tree
MIN_SAMPLES_LEAF = 20  # samples a leaf must hold
L2_REGULARIZATION = 0.0  # penalty on leaf values
MAX_FEATURES = 1.0  # share of features tried per split; tune: 0.1..1
SEED = 0  # a seed is not a hyperparameter: tune leaves it alone


def main() -> None:
    x, y = load_breast_cancer(return_X_y=True)
    x_train, x_val, y_train, y_val = train_test_split(
        x, y, test_size=0.4, random_state=0, stratify=y
    )
    model = HistGradientBoostingClassifier(
        learning_rate=LEARNING_RATE, max_iter=MAX_ITER, max_leaf_nodes=MAX_LEAF_NODES,
        min_samples_leaf=MIN_SAMPLES_LEAF, l2_regularization=L2_REGULARIZATION,
        max_features=MAX_FEATURES, early_stopping=False, random_state=SEED,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.fit(x_train, y_train)
    proba = model.predict_proba(x_val)
    print(f"val_logloss: {log_loss(y_val, proba):.6f}")


if __name__ == "__main__":
    main()
