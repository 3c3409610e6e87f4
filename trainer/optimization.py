"""The optimization part: optimizer, loss scaler, learning-rate schedule, gradient clipping, and the
parameter groups of a frozen or unfrozen trunk (SPEC 10), whose unfreezing is a scheduled change.

The optimizer's structure follows the frozen state: while the trunk is frozen it holds only the
head; unfreezing adds the trunk as groups of their own (with `lr_multiplier`), so the head keeps its
Adam state and the trunk's learning rate stays scaled for the rest of the run.
"""

from collections.abc import Callable

import torch

from models import GPT
from trainer.ema import WeightAverage
from trainer.reporting.timing import PhaseTimer
from trainer.transfer import TransferConfig


class Optimization:
    def __init__(
        self,
        model: GPT,
        make_optimizer: Callable[[list[dict]], torch.optim.Optimizer],
        scaler: torch.amp.GradScaler,
        schedule: Callable[[int], float],
        transfer: TransferConfig,
        weight_decay: float,
        grad_clip: float,
        timer: PhaseTimer,
        ema: WeightAverage | None = None,
    ):
        """`schedule(step)` is the scheduled learning rate (optim.learning_rate); `grad_clip` 0 measures
        the gradient norm without clipping; `ema` averages the weights after each step (optim.ema_decay)."""
        self.model, self.make_optimizer, self.scaler, self.schedule = model, make_optimizer, scaler, schedule
        self.transfer, self.weight_decay, self.grad_clip, self.timer = transfer, weight_decay, grad_clip, timer
        self.ema = ema
        self.unfrozen = False  # transfer=two_stage: the trunk has joined the optimizer
        self.optimizer = self.build_optimizer()

    def build_optimizer(self) -> torch.optim.Optimizer:
        """A fresh optimizer whose groups match the frozen state (a loaded state follows at once)."""
        freezes = self.transfer.freezes
        self.model.transformer.requires_grad_(not freezes or self.unfrozen)
        if not freezes:
            return self.make_optimizer(self.model.param_groups(self.weight_decay))
        groups = self.model.param_groups(self.weight_decay, self.model.head_parameters())
        return self.make_optimizer(groups + (self.trunk_groups() if self.unfrozen else []))

    def trunk_groups(self) -> list[dict]:
        groups = self.model.param_groups(self.weight_decay, self.model.trunk_parameters(), prefix="trunk_")
        return [{**group, "lr_multiplier": self.transfer.unfreeze_lr_multiplier} for group in groups]

    def set_lr(self, lr: float) -> None:
        for group in self.optimizer.param_groups:
            group["lr"] = lr * group.get("lr_multiplier", 1.0)  # an unfrozen trunk's multiplier

    def backward(self, loss: torch.Tensor) -> None:
        self.scaler.scale(loss).backward()

    def unscale_and_clip(self) -> torch.Tensor:
        """The total gradient norm (a device tensor), clipped to optim.grad_clip unless that is 0."""
        self.scaler.unscale_(self.optimizer)
        params = [p for p in self.model.parameters() if p.grad is not None]
        if self.grad_clip > 0:
            norm = torch.nn.utils.clip_grad_norm_(params, self.grad_clip)
        else:
            norm = torch.nn.utils.get_total_norm([p.grad for p in params])
        self.timer.lap("optimizer")
        return norm

    def step(self) -> None:
        self.scaler.step(self.optimizer)
        self.scaler.update()
        if self.ema is not None:
            self.ema.update()
        # flush the gradients as soon as we can, no need for this memory anymore
        self.optimizer.zero_grad(set_to_none=True)
        self.timer.lap("optimizer")

    def skip(self) -> None:
        """Drop this step's gradients: the weights and the optimizer state stay as they were."""
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.update()

    def unfreeze_due(self, step: int) -> bool:
        """transfer=two_stage: whether the trunk joins the training at `step`."""
        unfreeze_at = self.transfer.unfreeze_at_iteration
        return unfreeze_at is not None and not self.unfrozen and step >= unfreeze_at

    def unfreeze(self) -> None:
        """The trunk trains from now on; the head's groups and Adam state stay as they are."""
        self.model.transformer.requires_grad_(True)
        for group in self.trunk_groups():
            self.optimizer.add_param_group(group)
        self.unfrozen = True

    def state_dict(self) -> dict:
        """The payload entries of a checkpoint (format 1: optimizer, scaler, `unfrozen` in its state, and
        the weight average where there is one)."""
        average = {"ema": self.ema.state_dict()} if self.ema is not None else {}
        return {"optimizer": self.optimizer.state_dict(), "scaler": self.scaler.state_dict(), **average}

    def load_state_dict(self, payload: dict) -> None:
        """Continue from a checkpoint payload: the groups must match the saved ones (frozen or not)."""
        self.unfrozen = payload["state"].get("unfrozen", False)
        self.optimizer = self.build_optimizer()
        self.optimizer.load_state_dict(payload["optimizer"])
        if payload["scaler"]:  # empty when saved without loss scaling (float32): a float16 resume starts afresh
            self.scaler.load_state_dict(payload["scaler"])
        if self.ema is not None:
            self.ema.load_state_dict(payload.get("ema"))
        self.optimizer.zero_grad(set_to_none=True)
