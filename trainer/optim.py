"""The `optim` config group: AdamW with linear warmup and cosine decay to min_lr (or a constant rate)."""

from dataclasses import dataclass, field
from enum import Enum
from typing import Annotated

import torch
from annotated_types import Ge, Gt, Interval, Len

from trainer.errors import ConfigError
from trainer.knobs import horizon
from trainer.schedule import learning_rate

Beta = Annotated[float, Interval(ge=0, lt=1)]


class Schedule(str, Enum):
    cosine = "cosine"
    constant = "constant"


@dataclass
class OptimConfig:
    lr: Annotated[float, Gt(0)] = 1e-3
    min_lr: Annotated[float, Ge(0)] = 1e-4  # the floor of the cosine decay
    betas: Annotated[list[Beta], Len(2, 2)] = field(default_factory=lambda: [0.9, 0.99])
    weight_decay: Annotated[float, Ge(0)] = 0.1  # on tensors with dim >= 2 only
    grad_clip: Annotated[float, Ge(0)] = 1.0  # 0: no clipping (the norm is still measured)
    warmup_iters: Annotated[int, Ge(0)] = 100
    # null: decay until max_iters (of the run that started: a resume keeps the horizon)
    lr_decay_iters: Annotated[int, Ge(0)] | None = field(
        default=None, metadata=horizon("the learning rate decays until step {}")
    )
    schedule: Schedule = Schedule.cosine
    # an exponential moving average of the weights, used for evaluation and samples (0: none; the
    # masked-diffusion papers use 0.9999), from the ema_start-th optimizer step on
    ema_decay: Annotated[float, Interval(ge=0, lt=1)] = 0.0
    ema_start: Annotated[int, Ge(0)] = 0

    def __post_init__(self):
        if self.min_lr > self.lr:
            raise ConfigError("optim.min_lr", f"{self.min_lr} is above optim.lr={self.lr}", "a number in [0, optim.lr]")
        if self.lr_decay_iters is not None and self.lr_decay_iters < self.warmup_iters:
            raise ConfigError(
                "optim.lr_decay_iters",
                f"{self.lr_decay_iters} ends the decay before the warmup ({self.warmup_iters} iterations) ends",
                "null (decay until max_iters) or an integer >= optim.warmup_iters",
            )

    def learning_rate(self, step: int, max_iters: int) -> float:
        """The scheduled rate at `step` (before any stability backoff)."""
        return learning_rate(
            step,
            lr=self.lr,
            min_lr=self.min_lr,
            warmup_iters=self.warmup_iters,
            decay_iters=self.lr_decay_iters or max_iters,
            schedule=self.schedule.value,
        )

    def build(self, param_groups: list[dict], device: torch.device, fused: bool = True) -> torch.optim.Optimizer:
        """AdamW; `fused` (on CUDA only) updates every parameter in one kernel launch."""
        fused = fused and device.type == "cuda"
        return torch.optim.AdamW(param_groups, lr=self.lr, betas=tuple(self.betas), fused=fused)
