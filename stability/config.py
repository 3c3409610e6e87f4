"""The `stability` config group: which checks run, the recovery policy, and fault drills."""

from dataclasses import dataclass, field
from enum import Enum

from stability.faults import Fault
from stability.policy import RecoveryPolicy


class CheckName(str, Enum):
    logits = "logits"
    loss = "loss"
    grad_norm = "grad_norm"
    params = "params"
    val = "val"


@dataclass
class StabilityConfig(RecoveryPolicy):
    """The recovery policy's knobs, plus the checks to run and the faults to inject."""

    checks: list[CheckName] = field(
        default_factory=lambda: [CheckName.logits, CheckName.loss, CheckName.grad_norm, CheckName.val]
    )
    inject: list[Fault] = field(default_factory=list)
