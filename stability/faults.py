"""Fault injection: put NaN or Inf into logits, loss, gradients, weights or the validation loss at
chosen steps, to drill a setup's recovery and to prove it in tests.

A fault fires `repeat` times, from the first time training reaches `step` on; each firing is
used up, so a rollback re-running the same steps does not meet the same fault again unless
`repeat` asks for more.
"""

from dataclasses import dataclass
from enum import Enum
from typing import Annotated

import torch
from annotated_types import Ge

KINDS = {"nan": float("nan"), "inf": float("inf")}


class FaultTarget(str, Enum):
    logits = "logits"
    loss = "loss"
    grads = "grads"
    params = "params"
    val = "val"


class FaultConfigError(ValueError):
    """An invalid fault entry: names the field and what is allowed."""

    def __init__(self, key: str, problem: str, allowed: str):
        self.key, self.problem, self.allowed = key, problem, allowed
        super().__init__(f"{key}: {problem}; allowed: {allowed}")


@dataclass
class Fault:
    """One entry of `stability.inject`. `kind` is text because YAML reads a bare nan or inf as a float."""

    step: Annotated[int, Ge(0)]
    target: FaultTarget
    kind: str = "nan"
    repeat: Annotated[int, Ge(1)] = 1

    def __post_init__(self):
        self.target = FaultTarget(self.target)
        if self.kind not in KINDS:
            raise FaultConfigError("kind", f"{self.kind!r} is not a fault kind", ", ".join(KINDS))


class FaultInjector:
    def __init__(self, faults: list[Fault]):
        self.faults = faults
        self.fired = [0] * len(faults)

    def state_dict(self) -> list[int]:
        """Firings used so far: a resumed run must not meet the faults it already met."""
        return list(self.fired)

    def load_state_dict(self, fired: list[int]) -> None:
        if len(fired) == len(self.faults):
            self.fired = list(fired)

    def __bool__(self) -> bool:
        return bool(self.faults)

    def due(self, target: str, step: int) -> float | None:
        """The value to inject into `target` at `step` (NaN or Inf), or None; uses up one firing."""
        for index, fault in enumerate(self.faults):
            if fault.target == target and step >= fault.step and self.fired[index] < fault.repeat:
                self.fired[index] += 1
                return KINDS[fault.kind]
        return None

    def attach(self, model: torch.nn.Module, current_step) -> None:
        """Corrupt the model's output (logits) through a forward hook; `current_step()` says when."""
        if not any(f.target == "logits" for f in self.faults):
            return

        def poison(module, inputs, output):
            if torch.is_grad_enabled() and (value := self.due("logits", current_step())) is not None:
                return output + value  # NaN or Inf everywhere, still differentiable
            return output

        model.register_forward_hook(poison)

    def poison_loss(self, step: int, loss: torch.Tensor) -> torch.Tensor:
        value = self.due("loss", step)
        return loss if value is None else loss + value

    def poison_grads(self, step: int, parameters) -> None:
        value = self.due("grads", step)
        if value is not None:
            next(p for p in parameters if p.grad is not None).grad.fill_(value)

    def poison_params(self, step: int, parameters) -> None:
        value = self.due("params", step)
        if value is not None:
            with torch.no_grad():
                next(iter(parameters)).view(-1)[0] = value

    def poison_val_loss(self, step: int, val_loss: float) -> float:
        value = self.due("val", step)
        return val_loss if value is None else value
