"""Combine the checks of a step into one verdict, read with a single host sync."""

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from stability.checks import Check


@dataclass(frozen=True)
class Verdict:
    ok: bool
    failed: tuple[str, ...] = field(default=())  # names of the checks that fired


OK = Verdict(ok=True)


def alone(flags: torch.Tensor) -> torch.Tensor:
    """One process: its flags are the verdict."""
    return flags


class StabilityMonitor:
    """`agree` turns this process's flags into those of every process (under DDP an all-reduce of
    "any"), so all ranks skip, roll back or stop together."""

    def __init__(
        self,
        checks: list[Check],
        check_val_loss: bool = True,
        agree: Callable[[torch.Tensor], torch.Tensor] = alone,
    ):
        self.checks, self.check_val_loss, self.agree = checks, check_val_loss, agree

    def attach(self, model) -> None:
        for check in self.checks:
            check.attach(model)

    def begin_step(self) -> None:
        for check in self.checks:
            check.begin_step()

    def inspect(self, loss: torch.Tensor, grad_norm: torch.Tensor) -> Verdict:
        if not self.checks:
            return OK
        flags = self.agree(torch.stack([check.flag(loss, grad_norm) for check in self.checks]))
        # The step's one host sync: everything above stayed on the device.
        if not flags.any().item():
            return OK
        # Only a bad step pays for finding out which checks fired.
        return Verdict(ok=False, failed=tuple(c.name for c, bad in zip(self.checks, flags.tolist()) if bad))

    def inspect_val_loss(self, val_loss: float) -> Verdict:
        if self.check_val_loss and not math.isfinite(val_loss):
            return Verdict(ok=False, failed=("val",))
        return OK
