"""
Stand-in for karpathy/autoresearch's train.py (the surface), for overnight's tests.
It has the real file's shape: the model code first, then the hyperparameter block
(expressions, a tuple and a string among the numbers), then set-up with a constant that is
no hyperparameter, a training loop that rewrites one progress line with carriage returns,
and the summary block. Nothing is trained: every step is instant and the val_bpb comes from
prepare.evaluate_bpb's made-up loss surface.
Usage: uv run train.py
"""

import math
import time
from dataclasses import asdict, dataclass

from prepare import MAX_SEQ_LEN, TIME_BUDGET, Tokenizer, evaluate_bpb, make_dataloader

# ---------------------------------------------------------------------------
# GPT Model (a stand-in: it counts parameters and FLOPs, and remembers its settings)
# ---------------------------------------------------------------------------


@dataclass
class GPTConfig:
    sequence_len: int = 2048
    vocab_size: int = 32768
    n_layer: int = 12
    n_head: int = 6
    n_kv_head: int = 6
    n_embd: int = 768
    window_pattern: str = "SSSL"


class GPT:
    def __init__(self, config):
        self.config = config
        self.trained_with = {}

    def num_scaling_params(self):
        c = self.config
        wte = c.vocab_size * c.n_embd
        value_embeds = (c.n_layer + 1) // 2 * c.vocab_size * c.n_embd
        lm_head = c.vocab_size * c.n_embd
        transformer_matrices = 12 * c.n_layer * c.n_embd**2
        scalars = 2 * c.n_layer  # one residual and one x0 weight per layer
        total = wte + value_embeds + lm_head + transformer_matrices + scalars
        return {
            "wte": wte, "value_embeds": value_embeds, "lm_head": lm_head,
            "transformer_matrices": transformer_matrices, "scalars": scalars, "total": total,
        }  # fmt: skip

    def estimate_flops(self):
        c = self.config
        return 6 * self.num_scaling_params()["total"] + 12 * c.n_layer * c.n_embd * c.sequence_len

    def setup_optimizer(self, unembedding_lr, embedding_lr, scalar_lr, adam_betas, matrix_lr,
                        weight_decay):  # fmt: skip
        self.trained_with.update(
            unembedding_lr=unembedding_lr, embedding_lr=embedding_lr, scalar_lr=scalar_lr,
            adam_betas=adam_betas, matrix_lr=matrix_lr, weight_decay=weight_decay,
        )  # fmt: skip
        return self


def build_model_config(depth):
    base_dim = depth * ASPECT_RATIO
    model_dim = ((base_dim + HEAD_DIM - 1) // HEAD_DIM) * HEAD_DIM
    num_heads = model_dim // HEAD_DIM
    return GPTConfig(
        sequence_len=MAX_SEQ_LEN, vocab_size=vocab_size, n_layer=depth, n_head=num_heads,
        n_kv_head=num_heads, n_embd=model_dim, window_pattern=WINDOW_PATTERN,
    )  # fmt: skip


def get_lr_multiplier(progress):
    if progress < WARMUP_RATIO:
        return progress / WARMUP_RATIO if WARMUP_RATIO > 0 else 1.0
    if progress < 1.0 - WARMDOWN_RATIO:
        return 1.0
    cooldown = (1.0 - progress) / WARMDOWN_RATIO
    return cooldown + (1 - cooldown) * FINAL_LR_FRAC


# ---------------------------------------------------------------------------
# Hyperparameters (edit these directly, no CLI flags needed)
# ---------------------------------------------------------------------------

# fmt: off
# Model architecture
ASPECT_RATIO = 64       # model_dim = depth * ASPECT_RATIO
HEAD_DIM = 128          # target head dimension for attention
WINDOW_PATTERN = "SSSL" # sliding window pattern: L=full, S=half context

# Optimization
TOTAL_BATCH_SIZE = 2**19 # ~524K tokens per optimizer step
EMBEDDING_LR = 0.6      # learning rate for token embeddings (Adam)
UNEMBEDDING_LR = 0.004  # learning rate for lm_head (Adam)
MATRIX_LR = 0.04        # learning rate for matrix parameters (Muon)
SCALAR_LR = 0.5         # learning rate for per-layer scalars (Adam)
WEIGHT_DECAY = 0.2      # cautious weight decay for Muon
ADAM_BETAS = (0.8, 0.95) # Adam beta1, beta2
WARMUP_RATIO = 0.0      # fraction of time budget for LR warmup
WARMDOWN_RATIO = 0.5    # fraction of time budget for LR warmdown
FINAL_LR_FRAC = 0.0     # final LR as fraction of initial

# Model size
DEPTH = 8               # number of transformer layers
DEVICE_BATCH_SIZE = 128  # per-device batch size (reduce if OOM)
# fmt: on

# ---------------------------------------------------------------------------
# Setup: tokenizer, model, optimizer, dataloader
# ---------------------------------------------------------------------------

t_start = time.time()
H100_BF16_PEAK_FLOPS = 989.5e12

tokenizer = Tokenizer.from_directory()
vocab_size = tokenizer.get_vocab_size()
print(f"Vocab size: {vocab_size:,}")

config = build_model_config(DEPTH)
print(f"Model config: {asdict(config)}")
model = GPT(config)

param_counts = model.num_scaling_params()
print("Parameter counts:")
for key, value in param_counts.items():
    print(f"  {key:24s}: {value:,}")
num_params = param_counts["total"]
num_flops_per_token = model.estimate_flops()
print(f"Estimated FLOPs per token: {num_flops_per_token:e}")

tokens_per_fwdbwd = DEVICE_BATCH_SIZE * MAX_SEQ_LEN
assert TOTAL_BATCH_SIZE % tokens_per_fwdbwd == 0
grad_accum_steps = TOTAL_BATCH_SIZE // tokens_per_fwdbwd

model.setup_optimizer(
    unembedding_lr=UNEMBEDDING_LR, embedding_lr=EMBEDDING_LR, scalar_lr=SCALAR_LR,
    adam_betas=ADAM_BETAS, matrix_lr=MATRIX_LR, weight_decay=WEIGHT_DECAY,
)  # fmt: skip
train_loader = make_dataloader(tokenizer, DEVICE_BATCH_SIZE, MAX_SEQ_LEN, "train")
x, y, epoch = next(train_loader)

print(f"Time budget: {TIME_BUDGET}s")
print(f"Gradient accumulation steps: {grad_accum_steps}")

# ---------------------------------------------------------------------------
# Training loop (instant: a simulated 0.3 s per step, so 1,000 steps fill the budget)
# ---------------------------------------------------------------------------

t_start_training = time.time()
total_training_time = 0
step = 0
dt = 0.3
while True:
    progress = min(total_training_time / TIME_BUDGET, 1.0)
    lrm = get_lr_multiplier(progress)
    x, y, epoch = next(train_loader)
    loss = 3.2 + 6.0 * math.exp(-step / 80)
    if step > 10:
        total_training_time += dt
    if step % 50 == 0:
        tok_per_sec = int(TOTAL_BATCH_SIZE / dt)
        mfu = 100 * num_flops_per_token * TOTAL_BATCH_SIZE / dt / H100_BF16_PEAK_FLOPS
        remaining = max(0, TIME_BUDGET - total_training_time)
        print(f"\rstep {step:05d} ({100 * progress:.1f}%) | loss: {loss:.6f} | lrm: {lrm:.2f} | "
              f"dt: {dt * 1000:.0f}ms | tok/sec: {tok_per_sec:,} | mfu: {mfu:.1f}% | "
              f"epoch: {epoch} | remaining: {remaining:.0f}s    ", end="", flush=True)  # fmt: skip
    step += 1
    if step > 10 and total_training_time >= TIME_BUDGET:
        break

print()  # newline after \r training log
model.trained_with["warmdown_ratio"] = WARMDOWN_RATIO
total_tokens = step * TOTAL_BATCH_SIZE
val_bpb = evaluate_bpb(model, tokenizer, DEVICE_BATCH_SIZE)

t_end = time.time()
steady_state_mfu = 39.8
peak_vram_mb = 45060.2 * (DEPTH / 8) * (DEVICE_BATCH_SIZE / 128)

print("---")
print(f"val_bpb:          {val_bpb:.6f}")
print(f"training_seconds: {total_training_time:.1f}")
print(f"total_seconds:    {total_training_time + 25.9 + t_end - t_start:.1f}")
print(f"peak_vram_mb:     {peak_vram_mb:.1f}")
print(f"mfu_percent:      {steady_state_mfu:.2f}")
print(f"total_tokens_M:   {total_tokens / 1e6:.1f}")
print(f"num_steps:        {step}")
print(f"num_params_M:     {num_params / 1e6:.1f}")
print(f"depth:            {DEPTH}")
