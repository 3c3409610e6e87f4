"""The run config: one field per config group, each typed by the component that owns it.

Every knob is declared once, in the component's own config dataclass (models.ModelConfig,
masking.StickyMasking, stability.StabilityConfig, trainer.optim.OptimConfig, a mode's config in
trainer/objectives/, ...), with its domain as an annotated_types constraint. Hydra composes the YAML
into these schemas (a misspelt key fails there); trainer/contract.py then checks every value against
its domain and the rules below, before anything is built or written.
"""

import functools
import os
from dataclasses import dataclass, field, fields, is_dataclass
from datetime import datetime
from typing import Annotated, Any

from annotated_types import Interval
from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, OmegaConf

import masking
from models import Head, ModelConfig
from stability import FaultTarget, StabilityConfig
from trainer.checkpoint import CheckpointConfig, find_checkpoint
from trainer.corpus import DataConfig
from trainer.curriculum import StagesConfig
from trainer.distributed import world_size_from_env
from trainer.errors import ConfigError, require_plain_name
from trainer.knobs import FREE_ON_RESUME
from trainer.loss import LossConfig
from trainer.objectives import MODES, ModeConfig
from trainer.optim import OptimConfig
from trainer.reporting.callbacks import JsonlLoggerConfig
from trainer.reporting.console import ConsoleLoggerConfig
from trainer.reporting.plot import PlotLoggerConfig
from trainer.reporting.wandb_logger import WandbLoggerConfig
from trainer.sampling.settings import SamplingConfig
from trainer.system import SystemConfig
from trainer.transfer import TransferConfig
from trainer.vocab import TOKENIZERS, TokenizerConfig

MAX_COUNT = 2**31 - 1  # sizes and counts become tensor shapes and int64 seeds: keep them in range
Positive = Annotated[int, Interval(ge=1, le=MAX_COUNT)]


@dataclass
class LoggerConfig:
    """`logger: [console, jsonl, plot]`: each chosen logger's options; an unchosen one stays null."""

    console: ConsoleLoggerConfig | None = None
    jsonl: JsonlLoggerConfig | None = None
    plot: PlotLoggerConfig | None = None
    wandb: WandbLoggerConfig | None = None

    def __post_init__(self):
        if self.plot is not None and self.jsonl is None:
            raise ConfigError(
                "logger", "plot draws curves.png from metrics.jsonl, and jsonl is not chosen", "[console, jsonl, plot]"
            )


@dataclass
class Config:
    """The run config. A field marked FREE_ON_RESUME (run length, reporting, where files go) may
    change on resume without `resume_changes`; so may such fields of the components' configs."""

    mode: ModeConfig = MISSING
    # one strategy from conf/masking/, trained alone by stages=single; null when the stages carry their own
    masking: Any = None
    stages: StagesConfig | None = None  # null for the modes that do not follow a curriculum
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    tokenizer: TokenizerConfig = MISSING  # one option of conf/tokenizer/
    optim: OptimConfig = field(default_factory=OptimConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    system: SystemConfig = field(default_factory=SystemConfig, metadata=FREE_ON_RESUME)
    stability: StabilityConfig = field(default_factory=StabilityConfig)
    transfer: TransferConfig = field(default_factory=TransferConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig, metadata=FREE_ON_RESUME)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig, metadata=FREE_ON_RESUME)
    # the samples of each evaluation
    sample: SamplingConfig = field(default_factory=SamplingConfig, metadata=FREE_ON_RESUME)
    run_name: str = field(default=MISSING, metadata=FREE_ON_RESUME)  # the run folder's name under outputs/
    seed: Annotated[int, Interval(ge=0, le=MAX_COUNT)] = 1337
    # optimizer steps
    max_iters: Annotated[int, Interval(ge=0, le=MAX_COUNT)] = field(default=600, metadata=FREE_ON_RESUME)
    eval_interval: Positive = field(default=25, metadata=FREE_ON_RESUME)
    # batches of the fixed validation set (and of fresh training batches)
    eval_iters: Positive = field(default=5, metadata=FREE_ON_RESUME)
    log_interval: Positive = field(default=25, metadata=FREE_ON_RESUME)
    batch_size: Positive = 32  # rows per micro-batch
    block_size: Positive = 128  # tokens per row seen by the model
    gradient_accumulation_steps: Positive = 1  # micro-batches per optimizer step
    # none: start fresh (refused if the run folder holds checkpoints); auto: continue the run folder's
    # latest checkpoint, or start fresh; a path: continue from that checkpoint file
    resume: str = field(default="none", metadata=FREE_ON_RESUME)
    # keys a resumed run may change besides run length and reporting, e.g. [optim.lr]
    resume_changes: list[str] = field(default_factory=list, metadata=FREE_ON_RESUME)
    # evaluate the checkpoint to resume and exit: prints its metrics and appends them to
    # evaluations.jsonl in the run folder; nothing else is written
    eval_only: bool = field(default=False, metadata=FREE_ON_RESUME)

    def __post_init__(self):
        require_plain_name("run_name", self.run_name)
        if self.resume not in ("none", "auto"):
            find_checkpoint(self.resume, "resume")
        if self.eval_only and self.resume == "none":
            raise ConfigError(
                "eval_only",
                "evaluates the checkpoint to resume, and resume=none names none",
                "resume=auto or resume=PATH",
            )
        self._check_curriculum()
        self._check_accumulation(world_size_from_env())
        self._check_loss()
        self._check_sample()
        self._check_resume_changes()
        self._check_schedule()
        if self.transfer.freezes and self.mode.head == Head.lm:
            raise ConfigError(
                "transfer",
                f"{self.transfer.kind.value} freezes the trunk, and a {self.mode.name} model's head is tied to "
                "the trunk's embedding: nothing would train",
                "none or fine_tuning for this mode",
            )

    def ramp_notes(self) -> list[str]:
        """One line per ramp that ends after the run (a warmup or the entropy penalty's ramp), saying how
        far it gets: legal (a later resume may raise max_iters), but rarely what was meant."""
        notes, last = [], self.max_iters - 1
        if self.optim.warmup_iters > last:
            reached = self.optim.learning_rate(last, self.max_iters) / self.optim.lr
            notes.append(
                f"note: optim.warmup_iters={self.optim.warmup_iters} ends after max_iters={self.max_iters}: "
                f"the learning rate reaches {reached:.1%} of optim.lr={self.optim.lr:g}"
            )
        penalty = self.loss.entropy_penalty
        if penalty.max > 0 and penalty.end(self.max_iters) > self.max_iters:
            reached = penalty.strength(self.max_iters, self.max_iters)
            notes.append(
                f"note: loss.entropy_penalty.end_iter={penalty.end_iter} ends after max_iters={self.max_iters}: "
                f"the penalty reaches {reached:g} of loss.entropy_penalty.max={penalty.max:g}"
            )
        return notes

    @property
    def window_length(self) -> int:
        """Tokens per sampled window: block_size plus what the mode needs around it."""
        return self.block_size + self.mode.window_offset

    def _check_curriculum(self) -> None:
        mode = self.mode.name
        if not self.mode.staged:
            for key in ("masking", "stages"):
                if getattr(self, key) is not None:
                    raise ConfigError(key, f"{mode} does not use a masking curriculum", f"no {key}= choice for {mode}")
            return
        if self.stages is None:
            raise ConfigError("stages", f"{mode} trains on a stage curriculum", "stages=single, easy_to_hard, ...")
        if self.stages.train is None and self.masking is None:
            raise ConfigError(
                "masking",
                "stages=single trains the masking group's strategy, and none is chosen",
                ", ".join(masking.STRATEGIES),
            )
        if self.stages.train is not None and self.masking is not None:
            raise ConfigError(
                "masking",
                "is not used while stages.train lists its own stages",
                "stages=single to train this strategy alone, or no masking= choice",
            )
        active = len(self.stages.train or [None]) if self.stages.mix.value != "current" else 1
        if self.batch_size < active:
            raise ConfigError(
                "batch_size",
                f"{self.batch_size} rows cannot give each of the {active} stages mixed into a batch a row "
                f"(stages.mix={self.stages.mix.value})",
                f"an integer >= {active}, or stages.mix=current",
            )

    def _check_accumulation(self, world_size: int) -> None:
        """Under torchrun each of the processes runs an equal share of the step's micro-batches."""
        steps = self.gradient_accumulation_steps
        if steps % world_size:
            raise ConfigError(
                "gradient_accumulation_steps",
                f"{steps} micro-batches cannot be shared evenly by the {world_size} processes torchrun "
                "started (each runs gradient_accumulation_steps / processes)",
                f"a multiple of {world_size} ({', '.join(str(world_size * k) for k in (1, 2, 3))}, ...)",
            )

    def _check_loss(self) -> None:
        for key in self.loss.chosen():
            if key in self.mode.loss_refusals:
                raise ConfigError(
                    f"loss.{key}",
                    f"means nothing in {self.mode.name}: {self.mode.loss_refusals[key]}",
                    f"loss.{LossConfig.OFF[key]} for {self.mode.name}",
                )

    def _check_sample(self) -> None:
        rows = self.eval_iters * self.batch_size  # the validation rows a classifier shows
        if self.mode.sampling is None and self.sample.num_samples > rows:
            raise ConfigError(
                "sample.num_samples",
                f"{self.sample.num_samples}, and {self.mode.name} shows its predictions on the "
                f"{rows} validation rows (eval_iters x batch_size)",
                f"an integer in [0, {rows}]",
            )
        unread = self.sample.unread(self.mode.sampling)
        if unread:
            raise ConfigError(
                f"sample.{unread[0]}",
                f"is not read in {self.mode.name}",
                "its default; this mode reads " + ", ".join(f"sample.{key}" for key in self.mode.sample_keys()),
            )

    def _check_resume_changes(self) -> None:
        if self.resume_changes and self.resume == "none":
            raise ConfigError("resume_changes", "names changes to a resumed run, and resume=none starts fresh", "[]")
        for index, key in enumerate(self.resume_changes):
            if not _has_key(self, key):
                raise ConfigError(
                    f"resume_changes[{index}]", f"{key!r} is not a key of this config", "dotted keys such as optim.lr"
                )

    def _check_schedule(self) -> None:
        """Steps named in the config must be reached, or they would silently do nothing."""
        for index, fault in enumerate(self.stability.inject):
            last = self.max_iters if fault.target == FaultTarget.val else self.max_iters - 1
            if fault.step > last:
                raise ConfigError(
                    f"stability.inject[{index}].step",
                    f"{fault.step} is never reached in a run of max_iters={self.max_iters}",
                    f"an integer in [0, {last}]",
                )
        penalty = self.loss.entropy_penalty
        if penalty.max > 0 and penalty.start_iter >= penalty.end(self.max_iters):
            raise ConfigError(
                "loss.entropy_penalty.start_iter",
                f"{penalty.start_iter} is never reached in a run of max_iters={self.max_iters}",
                f"an integer in [0, {self.max_iters - 1}], or loss.entropy_penalty.max=0",
            )
        unfreeze = self.transfer.unfreeze_at_iteration
        if unfreeze is not None and unfreeze >= self.max_iters:
            raise ConfigError(
                "transfer.unfreeze_at_iteration",
                f"{unfreeze} is never reached in a run of max_iters={self.max_iters}",
                f"an integer in [1, {self.max_iters - 1}]",
            )


def _has_key(node, dotted: str) -> bool:
    """Whether the config tree holds the dotted key (a field of a dataclass node, or a list index)."""
    for name in dotted.split("."):
        if is_dataclass(node) and name in {f.name for f in fields(node)}:
            node = getattr(node, name)
        elif isinstance(node, list) and name.isdigit() and int(name) < len(node):
            node = node[int(name)]
        else:
            return False
    return True


def register_schemas() -> None:
    """The root schema, and one schema per option of the groups whose options differ in their keys
    (under schema/, which the options' defaults lists name, so they are not options themselves);
    and the resolvers of the default run_name, `${started:}_${pid:}`."""
    OmegaConf.register_new_resolver("started", started, replace=True)
    OmegaConf.register_new_resolver("pid", os.getpid, replace=True)
    store = ConfigStore.instance()
    store.store(name="config_schema", node=Config)
    for name, mode in MODES.items():
        store.store(group="schema/mode", name=name, node=mode)
    for name, strategy in masking.STRATEGIES.items():
        store.store(group="schema/masking", name=name, node=strategy)
    for name, tokenizer in TOKENIZERS.items():
        store.store(group="schema/tokenizer", name=name, node=tokenizer)


@functools.cache
def started() -> str:
    """When this process first named a run, to the millisecond: the same for every config it composes
    (the pre-launch check's and Hydra's), so the run folder checked is the one the job runs in."""
    now = datetime.now()
    return f"{now:%Y-%m-%d_%H-%M-%S}.{now.microsecond // 1000:03d}"
