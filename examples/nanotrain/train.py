"""nanotrain: a small GPT-style byte-level language model, trained for a fixed time.

This file is the SURFACE of the nanotrain study: proposals change it, and nothing else.
Everything is fair game here: the model, the optimizer, the schedule, the batch. The data,
the time budget and the metric live in `prepare.py`, which is locked.

Prints, at the end, a block in the style of karpathy/autoresearch:
    val_bpb:          <bits per byte on the validation split>   (the metric; lower is better)
    training_seconds, total_seconds, peak_mem_mb, num_steps, num_params, tokens_M
"""

import contextlib
import math
import os
import resource
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F
from prepare import (
    MAX_STEPS,
    SEQ_LEN,
    TIME_BUDGET,
    VOCAB_SIZE,
    evaluate_bpb,
    pick_device,
    train_data,
)

# --- hyperparameters (plain literals: the tuner rewrites them) ---------------------------
DEPTH = 4  # transformer blocks
MODEL_DIM = 128  # width of the residual stream (rounded to a multiple of head_dim)
BATCH_SIZE = 16  # sequences of SEQ_LEN bytes per optimizer step
LEARNING_RATE = 0.0006  # peak AdamW step size
WEIGHT_DECAY = 0.1  # AdamW decoupled weight decay (matrices only)
WARMUP_FRAC = 0.1  # share of the training time spent warming the learning rate up
WARMDOWN_FRAC = 0.2  # share of the training time spent decaying it at the end
FINAL_LR_FRAC = 0.1  # learning rate at the very end, relative to the peak
# ------------------------------------------------------------------------------------------

# Architecture details. Lower case on purpose: the knob tuner leaves them alone (each
# costs a one-minute experiment and they matter less than the knobs above); an LLM
# proposer may still change them, or anything else in this file.
head_dim = 32  # width of one attention head
adam_beta2 = 0.99  # AdamW second-moment decay
mlp_ratio = 4  # hidden width of the MLP, in units of MODEL_DIM
dropout = 0.0  # dropout on attention and MLP outputs: little use in one epoch-fraction
grad_clip = 1.0  # clip the global gradient norm
init_std = 0.02  # std of the initial weights

# On an accelerator the same recipe fills a bigger device in the same minute: width, depth
# and batch are multiplied by these factors. Not knobs either: the tuner should spend no
# CPU experiments on settings that only matter on a GPU.
accelerator_scale = {"cpu": (1, 1, 1), "mps": (2, 1, 4), "cuda": (4, 2, 8)}


class Block(nn.Module):
    def __init__(self, dim: int, n_head: int, hidden: int, dropout: float) -> None:
        super().__init__()
        self.n_head = n_head
        self.ln1 = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.proj = nn.Linear(dim, dim, bias=False)
        self.ln2 = nn.LayerNorm(dim)
        self.fc = nn.Linear(dim, hidden, bias=False)
        self.fc_out = nn.Linear(hidden, dim, bias=False)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, c = x.shape
        q, k, v = self.qkv(self.ln1(x)).split(c, dim=2)
        q, k, v = (z.view(b, t, self.n_head, c // self.n_head).transpose(1, 2) for z in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.dropout(self.proj(y.transpose(1, 2).reshape(b, t, c)))
        return x + self.dropout(self.fc_out(F.gelu(self.fc(self.ln2(x)))))


class GPT(nn.Module):
    def __init__(self, depth: int, dim: int, n_head: int, hidden: int, dropout: float) -> None:
        super().__init__()
        self.tok = nn.Embedding(VOCAB_SIZE, dim)
        self.pos = nn.Embedding(SEQ_LEN, dim)
        self.blocks = nn.ModuleList(Block(dim, n_head, hidden, dropout) for _ in range(depth))
        self.ln_f = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, VOCAB_SIZE, bias=False)
        self.head.weight = self.tok.weight  # tied input and output embeddings
        for name, p in self.named_parameters():
            if p.dim() == 2:
                std = init_std
                if name.endswith(("proj.weight", "fc_out.weight")):
                    std = init_std / math.sqrt(2 * depth)  # residual branches start small
                nn.init.normal_(p, 0.0, std)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        x = self.tok(idx) + self.pos(torch.arange(idx.shape[1], device=idx.device))
        for block in self.blocks:
            x = block(x)
        return self.head(self.ln_f(x))


def lr_factor(progress: float) -> float:
    """Learning-rate multiplier at `progress` (0 → 1) of the training budget:
    linear warm-up, constant, linear warm-down to FINAL_LR_FRAC."""
    warmup, warmdown = max(0.0, WARMUP_FRAC), min(max(0.0, WARMDOWN_FRAC), 1.0)
    if progress < warmup:
        return (progress + 1e-3) / (warmup + 1e-3)
    if progress > 1.0 - warmdown:
        done = (progress - (1.0 - warmdown)) / max(warmdown, 1e-9)
        return 1.0 - min(done, 1.0) * (1.0 - FINAL_LR_FRAC)
    return 1.0


def peak_mem_mb(device: str) -> float:
    if device.startswith("cuda"):
        return torch.cuda.max_memory_allocated() / 2**20
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 2**20 if sys.platform == "darwin" else rss / 2**10  # bytes vs KiB


def main() -> None:
    t_start = time.perf_counter()
    seed = int(os.environ.get("OVERNIGHT_SEED", "0"))
    torch.manual_seed(seed)
    device = pick_device()
    wide, deep, big = accelerator_scale.get(device.split(":")[0], (1, 1, 1))

    # Keep every knob in a range where the code runs, whatever a proposal writes.
    n_head = max(1, round(MODEL_DIM * wide / head_dim))
    dim = n_head * head_dim
    depth = max(1, int(DEPTH) * deep)
    batch = max(1, int(BATCH_SIZE) * big)

    data = train_data()
    model = GPT(depth, dim, n_head, int(mlp_ratio * dim), dropout).to(device)
    num_params = sum(p.numel() for p in model.parameters())
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": WEIGHT_DECAY}, {"params": no_decay, "weight_decay": 0}],
        lr=LEARNING_RATE, betas=(0.9, adam_beta2),
    )  # fmt: skip
    use_bf16 = device.startswith("cuda") and torch.cuda.is_bf16_supported()

    def autocast() -> contextlib.AbstractContextManager:
        # bf16 matmuls on a recent GPU; full precision elsewhere.
        if use_bf16:
            return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    gen = torch.Generator().manual_seed(seed)

    step, training_time, tokens = 0, 0.0, 0
    while training_time < TIME_BUDGET and (MAX_STEPS is None or step < MAX_STEPS):
        t0 = time.perf_counter()
        # A step-capped (smoke) run schedules by steps, so that it is deterministic.
        progress = training_time / TIME_BUDGET if MAX_STEPS is None else step / MAX_STEPS
        for group in optimizer.param_groups:
            group["lr"] = LEARNING_RATE * lr_factor(progress)

        starts = torch.randint(0, len(data) - SEQ_LEN - 1, (batch,), generator=gen)
        rows = torch.stack([data[s : s + SEQ_LEN + 1] for s in starts.tolist()]).long()
        rows = rows.to(device, non_blocking=True)
        x, y = rows[:, :-1], rows[:, 1:]
        with autocast():
            logits = model(x)
        loss = F.cross_entropy(logits.float().reshape(-1, VOCAB_SIZE), y.reshape(-1))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        optimizer.step()

        if not math.isfinite(loss.item()):
            print(f"training diverged at step {step} (loss {loss.item()})", file=sys.stderr)
            sys.exit(1)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        training_time += time.perf_counter() - t0
        tokens += x.numel()
        step += 1
        if step % 50 == 0:
            bits = loss.item() / math.log(2)
            print(f"step {step:5d}  loss {bits:.3f} bits/byte  {training_time:.1f}s", flush=True)

    with autocast():
        val_bpb = evaluate_bpb(model, device)
    print("---")
    print(f"val_bpb:          {val_bpb:.6f}")
    print(f"training_seconds: {training_time:.1f}")
    print(f"total_seconds:    {time.perf_counter() - t_start:.1f}")
    print(f"peak_mem_mb:      {peak_mem_mb(device):.1f}")
    print(f"num_steps:        {step}")
    print(f"num_params:       {num_params}")
    print(f"tokens_M:         {tokens / 1e6:.2f}")
    print(f"device:           {device}")


if __name__ == "__main__":
    main()
