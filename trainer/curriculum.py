"""The stage curriculum: which masking strategies a batch uses, and when to move to the next stage.

The curriculum itself is fixed; its progress (stage index, stale count, best val loss of the
stage) lives in TrainState, so checkpoints and resumes carry it.
"""

import math
from dataclasses import dataclass

from masking import MaskingStrategy
from trainer.state import TrainState


@dataclass(frozen=True)
class Stage:
    strategy: MaskingStrategy
    patience: int  # evaluations without a new best before moving on

    def describe(self) -> str:
        return self.strategy.describe()


@dataclass(frozen=True)
class Advance:
    """What one evaluation did to the curriculum, for the console and metrics.jsonl."""

    previous: int
    stage: int
    stale_count: int


class Curriculum:
    def __init__(self, train: list[Stage], validation: list[Stage], mix: str):
        self.train, self.validation, self.mix = train, validation, mix

    def training_rows(self, stage: int, batch_size: int) -> list[tuple[int, int]]:
        """(stage, rows) pairs that make up a training batch while at `stage`."""
        if self.mix == "current":
            return [(stage, batch_size)]
        stages = range(stage + 1) if self.mix == "cumulative" else range(len(self.train))
        return split_evenly(list(stages), batch_size)

    def after_eval(self, state: TrainState, val_loss: float) -> Advance | None:
        """Apply one evaluation's overall val loss: a new best resets patience, otherwise it runs out."""
        if val_loss < state.stage_best:
            state.stage_best, state.stale_count = val_loss, 0
            return None
        state.stale_count += 1
        is_last = state.stage == len(self.train) - 1
        if is_last or state.stale_count < self.train[state.stage].patience:
            return None
        previous, stale = state.stage, state.stale_count
        state.stage, state.stale_count, state.stage_best = state.stage + 1, 0, math.inf
        return Advance(previous=previous, stage=state.stage, stale_count=stale)


def split_evenly(items: list[int], total: int) -> list[tuple[int, int]]:
    """`total` rows over `items`: total // n each, the first total % n one more; empty shares dropped."""
    share, extra = divmod(total, len(items))
    counts = [share + (i < extra) for i in range(len(items))]
    return [(item, count) for item, count in zip(items, counts) if count]
