"""The guard: judges each step and each validation loss, and drills recovery with injected faults.

It owns the stability checks (stability/), the recovery policy and its counters (recent bad steps,
rollbacks, the learning-rate scale they leave), and the fault injector. It decides; the loop
applies the decision (trainer/loop.py `Trainer.apply`). Its faults enter through hook points the
loop offers (`StepHooks`), never as calls in the loop. A rollback restores every part of the
trainer but the guard: its counters are what keeps the policy bounded (SPEC 8).
"""

from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum

import torch

from stability import Action, FaultInjector, RecoveryPolicy, StabilityMonitor
from trainer.reporting.timing import PhaseTimer


class Decision(Enum):
    STEP = "step"  # the step is good: apply it
    SKIP = "skip"  # drop this step's gradients
    ROLLBACK = "rollback"  # back to the last good state, with a lower learning rate
    STOP = "stop"  # recovery gives up: training diverged


ACTIONS = {Action.SKIP: Decision.SKIP, Action.ROLLBACK: Decision.ROLLBACK, Action.ABORT: Decision.STOP}


@dataclass(frozen=True)
class Verdict:
    """A judgement: the decision and, when the step was bad, the checks that fired."""

    decision: Decision
    failed: tuple[str, ...] = ()

    @property
    def checks(self) -> str:
        return ",".join(self.failed)


GOOD = Verdict(Decision.STEP)


@dataclass
class StepHooks:
    """Hook points of a training step (OLMo-core style): functions the parts install, run in order.

    step_start(step); loss(step, loss) -> loss; gradients(step, parameters); val_loss(step, value) -> value.
    """

    step_start: list[Callable] = field(default_factory=list)
    loss: list[Callable] = field(default_factory=list)
    gradients: list[Callable] = field(default_factory=list)
    val_loss: list[Callable] = field(default_factory=list)

    def run(self, point: str, step: int, value=None):
        """Call the hooks of `point`; a hook that returns a value replaces `value` for the next."""
        for hook in getattr(self, point):
            result = hook(step, value)
            value = value if result is None else result
        return value


class Guard:
    def __init__(self, monitor: StabilityMonitor, policy: RecoveryPolicy, faults: FaultInjector, timer: PhaseTimer):
        self.monitor, self.policy, self.faults, self.timer = monitor, policy, faults, timer
        self.lr_scale = 1.0  # product of the learning-rate backoffs of all rollbacks
        self.rollbacks = 0  # also keys the batches, so a rolled-back run draws fresh ones
        self.bad_steps: list[int] = []  # recent skipped steps

    def install(self, model: torch.nn.Module, hooks: StepHooks, current_step: Callable[[], int]) -> None:
        """The checks' hooks on the model and the step, and the faults' (after them on the logits
        hook order: the faults first, so the checks see what the faults did)."""
        self.faults.attach(model, current_step)
        self.monitor.attach(model)
        hooks.step_start.append(lambda step, _: self.monitor.begin_step())
        hooks.step_start.append(lambda step, _: self.faults.poison_params(step, model.parameters()))
        hooks.loss.append(self.faults.poison_loss)
        hooks.gradients.append(lambda step, _: self.faults.poison_grads(step, model.parameters()))
        hooks.val_loss.append(self.faults.poison_val_loss)

    def judge(self, step: int, loss: torch.Tensor, grad_norm: torch.Tensor) -> Verdict:
        """A step's verdict from its device metrics (the step's one host sync, in the monitor)."""
        checked = self.monitor.inspect(loss, grad_norm)
        self.timer.lap("stability")
        return GOOD if checked.ok else self.decide(step, checked.failed)

    def judge_val_loss(self, step: int, val_loss: float) -> Verdict:
        checked = self.monitor.inspect_val_loss(val_loss)
        return GOOD if checked.ok else self.decide(step, checked.failed)

    def decide(self, step: int, failed: tuple[str, ...]) -> Verdict:
        verdict = Verdict(ACTIONS[self.policy.decide(step, failed, self.bad_steps, self.rollbacks)], failed)
        if verdict.decision is Decision.SKIP:
            self.bad_steps = self.policy.forget_old(step, self.bad_steps) + [step]
        return verdict

    def rolled_back(self) -> None:
        """Count a rollback: a lower learning rate from now on, and the bad steps forgotten."""
        self.rollbacks += 1
        self.lr_scale *= self.policy.lr_backoff
        self.bad_steps = []
        self.timer.lap("stability")  # the time the rollback took

    def give_up_reason(self, step: int, verdict: Verdict, latest_checkpoint) -> str:
        if self.policy.policy == "raise":
            return f"{verdict.checks} not finite at step {step} (stability.policy=raise)"
        return (
            f"{verdict.checks} not finite at step {step} after {self.rollbacks} rollbacks "
            f"(stability.max_rollbacks={self.policy.max_rollbacks}); the last checkpoint is {latest_checkpoint}"
        )

    def state_dict(self) -> dict:
        return {"lr_scale": self.lr_scale, "rollbacks": self.rollbacks, "bad_steps": list(self.bad_steps)}

    def load_state_dict(self, state: dict) -> None:
        self.lr_scale = state.get("lr_scale", 1.0)
        self.rollbacks = state.get("rollbacks", 0)
        self.bad_steps = list(state.get("bad_steps", []))
