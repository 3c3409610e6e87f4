"""The recovery policy: what to do about a bad step, escalating and bounded.

skip the step -> after `max_skips` bad steps within `window` steps, roll back to the last good
state with a lower learning rate -> after `max_rollbacks` rollbacks, give up. `raise` gives up at
the first bad step. Bad weights (params) and a non-finite validation loss cannot be skipped
away, so they roll back at once.
"""

from dataclasses import dataclass
from enum import Enum
from typing import Annotated

from annotated_types import Ge, Interval


class Action(Enum):
    SKIP = "skip"
    ROLLBACK = "rollback"
    ABORT = "abort"


class TrainingDiverged(RuntimeError):
    """Recovery gave up; the message says why in one line."""


ROLLBACK_AT_ONCE = {"params", "val"}


# `raise` is a Python keyword, hence the functional form.
PolicyMode = Enum("PolicyMode", {"recover": "recover", "raise": "raise"}, type=str)


@dataclass
class RecoveryPolicy:
    policy: PolicyMode = PolicyMode["recover"]  # raise: stop at the first bad step
    max_skips: Annotated[int, Ge(1)] = 3  # bad steps within `window` steps before rolling back
    window: Annotated[int, Ge(1)] = 50
    lr_backoff: Annotated[float, Interval(gt=0, le=1)] = 0.5  # the learning rate is multiplied by this per rollback
    max_rollbacks: Annotated[int, Ge(0)] = 3

    def decide(self, step: int, failed: tuple[str, ...], recent_bad_steps: list[int], rollbacks: int) -> Action:
        """The action for a bad `step`, given the bad steps already recorded and the rollbacks so far."""
        if self.policy == "raise":
            return Action.ABORT
        bad_in_window = [s for s in recent_bad_steps if step - s < self.window] + [step]
        if ROLLBACK_AT_ONCE.intersection(failed) or len(bad_in_window) >= self.max_skips:
            return Action.ROLLBACK if rollbacks < self.max_rollbacks else Action.ABORT
        return Action.SKIP

    def forget_old(self, step: int, recent_bad_steps: list[int]) -> list[int]:
        return [s for s in recent_bad_steps if step - s < self.window]
