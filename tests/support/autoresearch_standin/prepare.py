"""Stand-in for karpathy/autoresearch's prepare.py (the locked file): the same constants, the
same names imported by train.py and the same role, but no download, no tokenizer training
and no GPU.

The real one downloads data shards and trains a tokenizer into ~/.cache/autoresearch/ and
defines `evaluate_bpb(model, tokenizer, batch_size)`, the fixed metric. Here the "model"
carries the settings it was trained with, and `evaluate_bpb` scores them with a smooth
made-up function, so that overnight's mapping onto autoresearch's conventions can be tested
in a fraction of a second per run.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

MAX_SEQ_LEN = 2048  # context length
TIME_BUDGET = 300  # training time budget in seconds (5 minutes)
EVAL_TOKENS = 40 * 524288  # number of tokens for val eval
VOCAB_SIZE = 8192

# Where the made-up loss surface has its minimum (log scale for learning rates).
_OPTIMUM = {"matrix_lr": 0.06, "embedding_lr": 0.9, "warmdown_ratio": 0.7, "weight_decay": 0.1}


class Tokenizer:
    """The tokenizer's interface, without a vocabulary behind it."""

    @classmethod
    def from_directory(cls) -> Tokenizer:
        return cls()

    def get_vocab_size(self) -> int:
        return VOCAB_SIZE


def make_dataloader(tokenizer: Tokenizer, B: int, T: int, split: str) -> Iterator[tuple]:  # noqa: N803
    """Endless (inputs, targets, epoch) batches; here only their count matters."""
    step = 0
    while True:
        yield (B, T), (B, T), step // 1000
        step += 1


def evaluate_bpb(model: object, tokenizer: Tokenizer, batch_size: int) -> float:
    """Made-up val_bpb of how the model was trained: 0.95 at the optimum, worse away from it."""
    settings = model.trained_with  # type: ignore[attr-defined]
    loss = 0.95
    for name, best in _OPTIMUM.items():
        value = float(settings[name])
        if value <= 0:
            return float("nan")
        loss += 0.01 * math.log(value / best) ** 2
    return loss
