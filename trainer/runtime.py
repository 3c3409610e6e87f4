"""The runtime part: the model as a step calls it, where it runs, and the processes it runs in.

`raw_model` is the plain module (its parameters, its state dict); `model` is what forward and
backward call: compiled or not, and wrapped by DDP under several processes. `timer` is the clock
of the step's phases (trainer/reporting/timing.py); each part charges its own phase to it.
"""

import functools
from contextlib import AbstractContextManager

import torch

from trainer.distributed import ONE_PROCESS, Distributed
from trainer.reporting.timing import PhaseTimer


class Runtime:
    def __init__(
        self,
        model: torch.nn.Module,
        raw_model: torch.nn.Module,
        device: torch.device,
        autocast: AbstractContextManager,
        dtype: torch.dtype = torch.float32,
        dist: Distributed = ONE_PROCESS,
    ):
        """`dtype`: the autocast's precision (float16 needs a loss scaler)."""
        self.raw_model, self.device, self.autocast, self.dtype, self.dist = raw_model, device, autocast, dtype, dist
        self.unwrapped = model  # compiled or not, before DDP
        self.model = dist.wrap(model, device)
        self._wrapped_trainable = self.trainable()
        self.gather = functools.partial(dist.gather_rows, device=device)  # val values of every rank
        self.timer = PhaseTimer(device)  # the clock the parts charge their phases to

    def gradient_sync(self, last: bool) -> AbstractContextManager:
        """DDP all-reduces the gradients in the backward of a step's last micro-batch only."""
        return self.dist.gradient_sync(self.model, sync=last)

    def trainable(self) -> tuple[bool, ...]:
        return tuple(p.requires_grad for p in self.raw_model.parameters())

    def follow_trainable(self) -> None:
        """DDP reduces the gradients of the parameters that were trainable when it wrapped the model:
        after an unfreeze, or a loaded state with another frozen set, wrap it again."""
        if self.trainable() != self._wrapped_trainable:
            self.model = self.dist.wrap(self.unwrapped, self.device)
            self._wrapped_trainable = self.trainable()
