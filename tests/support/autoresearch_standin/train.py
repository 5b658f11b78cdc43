"""Stand-in for karpathy/autoresearch's train.py (the surface): the same knob names and the
same output block, printed at once instead of after five minutes of training."""

import time

from prepare import TIME_BUDGET, evaluate_bpb

# Model architecture
ASPECT_RATIO = 64  # model_dim = depth * ASPECT_RATIO
HEAD_DIM = 128  # target head dimension for attention

# Optimization
TOTAL_BATCH_SIZE = 524288  # ~524K tokens per optimizer step
EMBEDDING_LR = 0.6  # learning rate for token embeddings (Adam)
MATRIX_LR = 0.04  # learning rate for matrix parameters (Muon)
WEIGHT_DECAY = 0.2  # cautious weight decay for Muon
WARMDOWN_RATIO = 0.5  # fraction of time budget for LR warmdown

# Model size
DEPTH = 8  # number of transformer layers
DEVICE_BATCH_SIZE = 128  # per-device batch size


def main() -> None:
    t0 = time.time()
    config = {name: value for name, value in globals().items() if name.isupper()}
    val_bpb = evaluate_bpb(config)
    peak_vram_mb = 45060.2 * (DEPTH / 8) * (DEVICE_BATCH_SIZE / 128)
    num_params = 12 * DEPTH * (DEPTH * ASPECT_RATIO) ** 2 + 8192 * DEPTH * ASPECT_RATIO
    print("---")
    print(f"val_bpb:          {val_bpb:.6f}")
    print(f"training_seconds: {TIME_BUDGET + 0.1:.1f}")
    print(f"total_seconds:    {TIME_BUDGET + 25.9 + time.time() - t0:.1f}")
    print(f"peak_vram_mb:     {peak_vram_mb:.1f}")
    print("mfu_percent:      39.80")
    print("total_tokens_M:   499.6")
    print("num_steps:        953")
    print(f"num_params_M:     {num_params / 1e6:.1f}")
    print(f"depth:            {DEPTH}")


if __name__ == "__main__":
    main()
