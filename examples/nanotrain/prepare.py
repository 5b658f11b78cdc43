"""DO NOT CHANGE — the locked data and evaluation of the nanotrain study.

`overnight` treats this file as locked: proposals may change only `train.py`, and this file
must stay byte-identical, so every experiment trains on the same bytes, gets the same time
and is judged by the same yardstick.

The corpus is the Python standard library's own source code, read from this interpreter's
installation (`sysconfig.get_paths()["stdlib"]`): no download, no cache, nothing to keep in
sync. Files are taken in sorted order (test suites, IDLE, lib2to3, ensurepip and
site-packages left out) and each document ends with a NUL byte. A file goes to the
validation split when the SHA-256 of its relative path starts with a byte below 16 (about
1 in 16 files), so no validation file is ever seen in training; each split is capped at a
fixed byte budget. The same Python installation always gives the same bytes; another Python
version gives a slightly different corpus, so compare val_bpb only between runs on the same
interpreter (the corpus fingerprint printed by `python prepare.py` tells).

The model sees raw bytes (vocabulary 256, no tokenizer) and is judged in bits per byte on
the validation split: `evaluate_bpb` feeds `EVAL_WINDOWS` windows of `SEQ_LEN` (256)
bytes, spread evenly over the whole validation split, and averages the cross-entropy of
predicting every next byte. For scale, on this corpus: knowing nothing costs 8.0 bits per byte, byte
frequencies alone 4.7, byte pairs (a bigram model) 3.4, `gzip -9` 1.8 and `xz -9` 1.4.

Time: `TIME_BUDGET` seconds of training, by the wall clock, as in karpathy/autoresearch.
`train.py` is expected to stop training when it is spent and then call `evaluate_bpb`, which
refuses (raises) when it is called long after the budget: training longer than everyone else
is not an improvement.

Settings (environment variables, read once at import):
    NANOTRAIN_SMOKE=1         a run of a few seconds for tests and first tries: 64-byte
                              contexts, a 1 MB training slice, 30 optimizer steps, a small
                              evaluation. Its numbers are comparable only with other smoke runs.
    NANOTRAIN_TIME_BUDGET=S   override the training time (seconds), e.g. on a slow laptop.
    NANOTRAIN_DEVICE=cpu      force a device instead of the automatic cuda > mps > cpu.

`python prepare.py` prints the corpus summary and the settings this machine gets.
"""

from __future__ import annotations

import hashlib
import math
import os
import sysconfig
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# --- fixed constants of the task ----------------------------------------------------------
VOCAB_SIZE = 256  # bytes
TRAIN_BYTES = 8_000_000  # byte budget of the training split
VAL_BYTES = 600_000  # byte budget of the validation split
EVAL_SLACK_S = 45.0  # start-up (imports, data, compilation) allowed on top of TIME_BUDGET
SKIP_DIRS = frozenset(
    {"site-packages", "dist-packages", "test", "tests", "idlelib", "lib2to3", "ensurepip",
     "turtledemo", "__pycache__"}
)  # fmt: skip

_IMPORTED_AT = time.monotonic()  # the clock that evaluate_bpb checks TIME_BUDGET against


def _flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() not in ("", "0", "false", "no")


def pick_device() -> str:
    """cuda if present, else mps (Apple silicon), else cpu; NANOTRAIN_DEVICE overrides."""
    forced = os.environ.get("NANOTRAIN_DEVICE", "").strip()
    if forced:
        return forced
    import torch

    if torch.cuda.is_available():
        return "cuda"
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return "mps"
    return "cpu"


@dataclass(frozen=True)
class Settings:
    device: str
    smoke: bool
    seq_len: int  # context length of training and evaluation windows
    time_budget: float  # seconds of training
    max_steps: int | None  # a cap on optimizer steps (smoke runs only)
    eval_windows: int  # windows of seq_len bytes scored by evaluate_bpb
    train_bytes: int


def _settings() -> Settings:
    device = pick_device()
    smoke = _flag("NANOTRAIN_SMOKE")
    if smoke:
        # The same code path on a smaller problem: short contexts make a step several times
        # cheaper. A step cap rather than a clock, so that a smoke run gives the same
        # number on a busy machine as on an idle one; the clock is only a backstop.
        seq_len, budget, steps, windows, train = 64, 60.0, 30, 128, 1_000_000
    else:
        # The same minute of training on every device; accelerators fill it with a bigger
        # model and batch (train.py scales up) and get a larger evaluation.
        seq_len, budget, steps, train = 256, 50.0, None, TRAIN_BYTES
        windows = 128 if device == "cpu" else 1024
    override = os.environ.get("NANOTRAIN_TIME_BUDGET", "").strip()
    if override:
        budget = float(override)
    return Settings(device, smoke, seq_len, budget, steps, windows, train)


SETTINGS = _settings()
SEQ_LEN = SETTINGS.seq_len
TIME_BUDGET = SETTINGS.time_budget
MAX_STEPS = SETTINGS.max_steps
EVAL_WINDOWS = SETTINGS.eval_windows


# --- the corpus ---------------------------------------------------------------------------


def _source_files(root: Path) -> list[str]:
    found = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if d not in SKIP_DIRS)
        for name in files:
            if name.endswith(".py"):
                found.append(Path(folder, name).relative_to(root).as_posix())
    return sorted(found)


def _is_val(rel: str) -> bool:
    return hashlib.sha256(rel.encode()).digest()[0] < 16


_CORPUS: tuple[bytes, bytes] | None = None


def load_corpus() -> tuple[bytes, bytes]:
    """(train, val): the two splits as bytes, each document followed by a NUL byte."""
    global _CORPUS
    if _CORPUS is None:
        root = Path(sysconfig.get_paths()["stdlib"])
        train, val = bytearray(), bytearray()
        for rel in _source_files(root):
            split, cap = (val, VAL_BYTES) if _is_val(rel) else (train, TRAIN_BYTES)
            if len(split) >= cap:
                continue
            split += (root / rel).read_bytes()[: cap - len(split) - 1] + b"\0"
        if len(train) < 100_000 or len(val) < 20_000:
            raise RuntimeError(f"the standard library at {root} is too small for this study")
        _CORPUS = bytes(train), bytes(val)
    return _CORPUS


def corpus_fingerprint() -> str:
    train, val = load_corpus()
    return hashlib.sha256(train + b"\1" + val).hexdigest()[:16]


def train_data() -> Any:
    """The training split as a 1-D uint8 torch tensor (on the CPU)."""
    import torch

    train = load_corpus()[0][: SETTINGS.train_bytes]
    return torch.frombuffer(bytearray(train), dtype=torch.uint8)


def _eval_windows() -> Any:
    import torch

    val = load_corpus()[1]
    span = SEQ_LEN + 1  # inputs plus the byte after the last one
    count = min(EVAL_WINDOWS, len(val) // span)
    stride = (len(val) - span) // max(1, count - 1)
    rows = [val[i * stride : i * stride + span] for i in range(count)]
    return torch.tensor([list(r) for r in rows], dtype=torch.long)


# --- the metric ---------------------------------------------------------------------------


def evaluate_bpb(model: Any, device: str, batch_size: int = 16) -> float:
    """Validation bits per byte of `model` (lower is better).

    `model(idx)` gets a LongTensor of byte values, shape (B, SEQ_LEN), and must return
    logits of shape (B, SEQ_LEN, 256): position t predicts byte t + 1. Every byte of every
    window is scored, so a model that uses more context is rewarded. Non-finite logits or a
    wrong shape score nan, which overnight counts as a crash.
    """
    import torch
    import torch.nn.functional as F

    elapsed = time.monotonic() - _IMPORTED_AT
    if elapsed > TIME_BUDGET + EVAL_SLACK_S + 0.25 * TIME_BUDGET:
        raise RuntimeError(
            f"evaluate_bpb called {elapsed:.0f}s after start; the training budget is "
            f"{TIME_BUDGET:g}s. Train within TIME_BUDGET."
        )
    windows = _eval_windows()
    was_training = getattr(model, "training", False)
    if hasattr(model, "eval"):
        model.eval()
    total_nats, total_bytes = 0.0, 0
    with torch.no_grad():
        for start in range(0, len(windows), max(1, int(batch_size))):
            rows = windows[start : start + max(1, int(batch_size))].to(device)
            x, y = rows[:, :-1], rows[:, 1:]
            logits = model(x)
            if tuple(logits.shape) != (x.shape[0], SEQ_LEN, VOCAB_SIZE):
                return float("nan")
            loss = F.cross_entropy(
                logits.float().reshape(-1, VOCAB_SIZE), y.reshape(-1), reduction="sum"
            )
            total_nats += float(loss)
            total_bytes += y.numel()
    if was_training and hasattr(model, "train"):
        model.train()
    bpb = total_nats / (math.log(2) * total_bytes)
    return bpb if math.isfinite(bpb) else float("nan")


if __name__ == "__main__":
    t0 = time.perf_counter()
    train, val = load_corpus()
    root = sysconfig.get_paths()["stdlib"]
    print(f"corpus   {root}: train {len(train):,} bytes, val {len(val):,} bytes")
    print(f"         fingerprint {corpus_fingerprint()} (built in {time.perf_counter() - t0:.2f}s)")
    s = SETTINGS
    steps = f", at most {s.max_steps} steps" if s.max_steps else ""
    print(f"settings device {s.device}, smoke {s.smoke}, {s.time_budget:g}s of training{steps},")
    print(f"         evaluation on {s.eval_windows} windows of {SEQ_LEN} bytes")
