"""Stand-in for karpathy/autoresearch's prepare.py (the locked file): same constants and the
same role, but no download, no tokenizer and no GPU.

The real one downloads data shards and trains a tokenizer into ~/.cache/autoresearch/ and
defines `evaluate_bpb`, the fixed metric. Here `evaluate_bpb` scores a training config with
a smooth made-up function, so that overnight's mapping onto autoresearch's conventions can
be tested in a fraction of a second per run.
"""

from __future__ import annotations

import math

MAX_SEQ_LEN = 2048  # context length
TIME_BUDGET = 300  # training time budget in seconds (5 minutes)
EVAL_TOKENS = 40 * 524288  # number of tokens for val eval

# Where the made-up loss surface has its minimum (log scale for learning rates).
_OPTIMUM = {"MATRIX_LR": 0.06, "EMBEDDING_LR": 0.9, "WARMDOWN_RATIO": 0.7, "WEIGHT_DECAY": 0.1}


def evaluate_bpb(config: dict[str, float]) -> float:
    """Made-up val_bpb of a config: 0.95 at the optimum, worse away from it."""
    loss = 0.95
    for name, best in _OPTIMUM.items():
        value = float(config[name])
        if value <= 0:
            return float("nan")
        loss += 0.01 * math.log(value / best) ** 2
    return loss
