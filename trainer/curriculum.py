"""The stage curriculum: which masking strategies a batch uses, and when to move to the next stage.

The stages are fixed; the curriculum owns its progress (stage index, stale count, best val loss of
the stage) and hands it to checkpoints (`state_dict`), so resumes carry it. An unstaged mode has a
curriculum without stages, which never advances.
"""

import math
from dataclasses import dataclass, field, make_dataclass
from enum import Enum
from typing import Annotated, Any, ClassVar

from annotated_types import Ge

import masking
from masking import MaskingStrategy
from trainer.errors import ConfigError

Patience = Annotated[int, Ge(1)]


def _stage_schema(strategy: type[MaskingStrategy]) -> type:
    """A stage entry: the strategy's own fields (same defaults as its masking group) plus its patience."""
    extra = [("val_loss_stale_count", Patience, field(default=10))]  # evaluations without a new best
    return make_dataclass(f"{strategy.__name__}Stage", extra, bases=(strategy,))


STAGE_SCHEMAS = {name: _stage_schema(cls) for name, cls in masking.STRATEGIES.items()}


def stage_schema(entry: dict) -> type:
    """The schema of one `stages.train` / `stages.validation` entry, chosen by its `type`."""
    return STAGE_SCHEMAS[masking.strategy_class(entry.get("type")).__dataclass_fields__["type"].default]


class StageMix(str, Enum):
    cumulative = "cumulative"  # at stage k, rows split evenly over stages 0..k
    current = "current"  # stage k only
    all = "all"  # every stage in every batch


@dataclass
class StagesConfig:
    """The `stages` config group (SPEC 5). Entries: {type: sticky|random|span, its parameters,
    val_loss_stale_count}; `train: null` is one stage made of the `masking` group's strategy."""

    train: list[Any] | None = None
    validation: list[Any] | None = None  # null: the training stages
    mix: StageMix = StageMix.cumulative

    # how the config validator reads the entries of the lists above
    ENTRY_SCHEMAS: ClassVar[dict] = {"train": stage_schema, "validation": stage_schema}

    def __post_init__(self):
        for split in ("train", "validation"):
            if getattr(self, split) == []:
                raise ConfigError(f"stages.{split}", "the list is empty", "a list of stages, or null")

    def build(self, single: MaskingStrategy | None) -> "Curriculum":
        """The curriculum; `single` is the masking group's strategy, the one stage of `train: null`."""
        train = [Stage(single, patience=1)] if self.train is None else [as_stage(s) for s in self.train]
        validation = train if self.validation is None else [as_stage(s) for s in self.validation]
        return Curriculum(train, validation, self.mix.value)


def as_stage(entry) -> "Stage":
    return Stage(entry, entry.val_loss_stale_count)


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
        self.stage = 0  # the current training stage
        self.stale_count = 0  # evaluations since the stage's best val loss
        self.stage_best = math.inf  # best overall val loss within the current stage

    @classmethod
    def unstaged(cls) -> "Curriculum":
        """The curriculum of a mode whose data does not follow stages: stage 0 for ever."""
        return cls([], [], StageMix.current.value)

    @property
    def staged(self) -> bool:
        return bool(self.train)

    def training_rows(self, stage: int, batch_size: int) -> list[tuple[int, int]]:
        """(stage, rows) pairs that make up a training batch while at `stage`."""
        if self.mix == "current":
            return [(stage, batch_size)]
        stages = range(stage + 1) if self.mix == "cumulative" else range(len(self.train))
        return split_evenly(list(stages), batch_size)

    def after_eval(self, val_loss: float) -> Advance | None:
        """Apply one evaluation's overall val loss: a new best resets patience, otherwise it runs out."""
        if not self.staged:
            return None
        if val_loss < self.stage_best:
            self.stage_best, self.stale_count = val_loss, 0
            return None
        self.stale_count += 1
        is_last = self.stage == len(self.train) - 1
        if is_last or self.stale_count < self.train[self.stage].patience:
            return None
        previous, stale = self.stage, self.stale_count
        self.stage, self.stale_count, self.stage_best = self.stage + 1, 0, math.inf
        return Advance(previous=previous, stage=self.stage, stale_count=stale)

    def state_dict(self) -> dict:
        return {"stage": self.stage, "stale_count": self.stale_count, "stage_best": self.stage_best}

    def load_state_dict(self, state: dict) -> None:
        self.stage = state.get("stage", 0)
        self.stale_count = state.get("stale_count", 0)
        self.stage_best = state.get("stage_best", math.inf)


def split_evenly(items: list[int], total: int) -> list[tuple[int, int]]:
    """`total` rows over `items`: total // n each, the first total % n one more; empty shares dropped."""
    share, extra = divmod(total, len(items))
    counts = [share + (i < extra) for i in range(len(items))]
    return [(item, count) for item, count in zip(items, counts) if count]
