"""Learning-rate schedule: linear warmup, then cosine decay to min_lr (or constant)."""

import math


def learning_rate(
    step: int, *, lr: float, min_lr: float, warmup_iters: int, decay_iters: int, schedule: str = "cosine"
) -> float:
    if step < warmup_iters:
        return lr * (step + 1) / (warmup_iters + 1)
    if schedule == "constant":
        return lr
    if step >= decay_iters:
        return min_lr
    progress = (step - warmup_iters) / max(1, decay_iters - warmup_iters)
    return min_lr + 0.5 * (1.0 + math.cos(math.pi * progress)) * (lr - min_lr)
