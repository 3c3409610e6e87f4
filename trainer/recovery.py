"""Carries out the recovery policy's decisions on a Trainer: skip, roll back, or stop.

Every detection and action becomes one console line and one metrics.jsonl record.
"""

import copy

from stability import Action, RecoveryPolicy, TrainingDiverged, Verdict
from trainer.checkpoint import load_checkpoint


class Recovery:
    def __init__(self, policy: RecoveryPolicy):
        self.policy = policy

    def handle(self, trainer, verdict: Verdict) -> Action:
        state = trainer.state
        action = self.policy.decide(state.step, verdict.failed, state.bad_steps, state.rollbacks)
        checks = ",".join(verdict.failed)
        self.report(trainer, checks, action)
        if action is Action.ABORT:
            raise TrainingDiverged(self.abort_reason(trainer, checks))
        if action is Action.SKIP:
            self.skip(trainer)
        else:
            self.rollback(trainer)
        return action

    def skip(self, trainer) -> None:
        """Drop this step's gradients: the weights and the optimizer state stay as they were."""
        state = trainer.state
        state.bad_steps = self.policy.forget_old(state.step, state.bad_steps) + [state.step]
        trainer.optimizer.zero_grad(set_to_none=True)
        trainer.scaler.update()

    def rollback(self, trainer) -> None:
        """Back to the last good state of this run, with a lower learning rate and fresh batches."""
        state = trainer.state
        rollbacks, lr_scale = state.rollbacks + 1, state.lr_scale * self.policy.lr_backoff
        latest = trainer.checkpoints.latest()
        # the snapshot stays reusable: loading may adopt the tensors it is given
        payload = load_checkpoint(latest) if latest is not None else copy.deepcopy(trainer.snapshot)
        trainer.load_payload(payload)
        # The counters outlive the rollback: they are what keeps the policy bounded. The rollback
        # count also keys the batches, so the re-run steps draw batches other than the bad ones.
        state.rollbacks, state.lr_scale, state.bad_steps = rollbacks, lr_scale, []
        source = latest or "the in-memory state of step 0"
        trainer.reporting.callbacks.on_event(
            trainer,
            f"rolled back to {source} (step {state.step}), learning rate now x{lr_scale:g}",
            {
                "stability/event": "rollback_done",
                "action": "rollback",
                "lr": trainer.lr,
                "stability/rollbacks": rollbacks,
            },
        )

    def report(self, trainer, checks: str, action: Action) -> None:
        trainer.reporting.callbacks.on_event(
            trainer,
            f"instability at step {trainer.state.step}: {checks} not finite -> {action.value}",
            {"stability/event": f"{checks}: {action.value}", "check": checks, "action": action.value, "lr": trainer.lr},
        )

    def abort_reason(self, trainer, checks: str) -> str:
        step = trainer.state.step
        if self.policy.policy == "raise":
            return f"{checks} not finite at step {step} (stability.policy=raise)"
        return (
            f"{checks} not finite at step {step} after {trainer.state.rollbacks} rollbacks "
            f"(stability.max_rollbacks={self.policy.max_rollbacks}); the last checkpoint is "
            f"{trainer.checkpoints.latest()}"
        )
