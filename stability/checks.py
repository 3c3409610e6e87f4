"""Instability checks. Each turns what it watches into a device-side boolean ("bad"); nothing here
reads a tensor on the host, so a step with every check enabled still costs one sync in total.
"""

from abc import ABC, abstractmethod

import torch
from torch import nn


class Check(ABC):
    name: str

    def attach(self, model: nn.Module) -> None:
        """Install whatever the check needs on the model (called once)."""

    def begin_step(self) -> None:
        """Forget the previous step."""

    @abstractmethod
    def flag(self, loss: torch.Tensor, grad_norm: torch.Tensor) -> torch.Tensor:
        """A 0-d bool tensor on the loss's device: True when this step is unsafe to apply."""


class LossCheck(Check):
    name = "loss"

    def flag(self, loss, grad_norm):
        return ~torch.isfinite(loss)


class GradNormCheck(Check):
    """A non-finite total gradient norm.

    With float16 a GradScaler is active, and an overflow there is routine: the scaler skips the
    step and lowers the scale. Such steps are not instabilities, so this check stands down and
    leaves them to the scaler (a genuinely diverging model still shows up in the loss and logits).
    """

    name = "grad_norm"

    def __init__(self, scaler_enabled: bool):
        self.scaler_enabled = scaler_enabled

    def flag(self, loss, grad_norm):
        if self.scaler_enabled:
            return torch.zeros((), dtype=torch.bool, device=loss.device)
        return ~torch.isfinite(grad_norm)


class LogitsCheck(Check):
    """Non-finite logits in any micro-batch of the step, seen through a forward hook on the model."""

    name = "logits"

    def __init__(self):
        self._bad: torch.Tensor | None = None

    def attach(self, model: nn.Module) -> None:
        model.register_forward_hook(self._record)

    def begin_step(self) -> None:
        self._bad = None

    def _record(self, module, inputs, output) -> None:
        if not torch.is_grad_enabled():  # evaluation forwards are the validation check's business
            return
        bad = ~torch.isfinite(output.detach()).all()
        self._bad = bad if self._bad is None else self._bad | bad

    def flag(self, loss, grad_norm):
        if self._bad is None:
            return torch.zeros((), dtype=torch.bool, device=loss.device)
        return self._bad


class ParamsCheck(Check):
    """Non-finite weights: one fused norm over all parameters instead of a test per tensor."""

    name = "params"

    def __init__(self, parameters: list[torch.Tensor]):
        self.parameters = parameters

    def flag(self, loss, grad_norm):
        norms = torch._foreach_norm(self.parameters)
        return ~torch.isfinite(torch.stack(norms).sum())
