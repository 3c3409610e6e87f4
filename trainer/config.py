"""Config schemas, registered with Hydra's ConfigStore: a misspelt key fails when Hydra composes
the config. What a type cannot express (ranges, combinations) is checked in trainer/validation.py.
"""

from dataclasses import dataclass, field
from enum import Enum
from typing import Any, List, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING


class ModeName(Enum):
    language_model = "language_model"
    unmasking = "unmasking"
    token_classification = "token_classification"
    sequence_scoring = "sequence_scoring"


class Selection(Enum):
    random = "random"
    sticky = "sticky"


class ReplacementSource(Enum):
    random = "random"  # a uniformly drawn other character
    model = "model"  # a sample of the frozen unmasking model at that position


class Fill(Enum):
    argmax = "argmax"
    sample = "sample"


class TransferKind(Enum):
    none = "none"
    fine_tuning = "fine_tuning"  # load the trunk, train everything
    feature_extraction = "feature_extraction"  # load the trunk, freeze it, train the head
    two_stage = "two_stage"  # frozen until unfreeze_at_iteration, then everything trains


class Attention(Enum):
    causal = "causal"
    bidirectional = "bidirectional"


class Positions(Enum):
    rope = "rope"
    learned = "learned"


class Device(Enum):
    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"


class DType(Enum):
    auto = "auto"
    float32 = "float32"
    bfloat16 = "bfloat16"
    float16 = "float16"


class Schedule(Enum):
    cosine = "cosine"
    constant = "constant"


@dataclass
class ModeConfig:
    """The training objective. Fields below `attention` belong to one mode each; the rest stay as they are."""

    name: ModeName = MISSING
    attention: Attention = MISSING
    # token_classification: a corruption rate ramps linearly from rate_min to rate_max
    rate_min: float = 0.05
    rate_max: float = 0.9
    rate_warmup: int = 1000
    selection: Selection = Selection.random  # sticky: clusters grown with sticky_p1 / sticky_p2
    sticky_p1: float = 0.1
    sticky_p2: float = 0.5
    source: ReplacementSource = ReplacementSource.random
    class_weights: bool = False  # inverse-frequency weights per batch
    num_classes: int = 2
    # sequence_scoring (and token_classification with source=model): the frozen unmasking model
    unmasking_checkpoint: Optional[str] = None
    fill: Fill = Fill.argmax


@dataclass
class CorruptionConfig:
    """BERT-style corruption of the selected positions; the rest stay unchanged."""

    mask_prob: float = 0.8
    random_prob: float = 0.1


@dataclass
class MaskingConfig:
    """One masking strategy. Only the fields of the chosen `type` are set; the others stay null."""

    type: str = MISSING
    target_masked_ratio: Optional[float] = None  # sticky
    p1_probability: Optional[float] = None  # sticky
    p2_probability: Optional[float] = None  # sticky
    max_masked_ratio: Optional[float] = None  # random
    spans_count: Optional[int] = None  # span
    corruption: Optional[CorruptionConfig] = None


@dataclass
class StageConfig(MaskingConfig):
    """A curriculum stage: a masking strategy plus its patience."""

    val_loss_stale_count: int = 10  # evaluations without improvement before moving on


class StageMix(Enum):
    cumulative = "cumulative"  # at stage k, rows split evenly over stages 0..k
    current = "current"  # stage k only
    all = "all"  # every stage in every batch


@dataclass
class StagesConfig:
    train: Optional[List[StageConfig]] = None  # null: one stage, the `masking` group's strategy
    validation: Optional[List[StageConfig]] = None  # null: the training stages
    mix: StageMix = StageMix.cumulative


class CheckName(Enum):
    logits = "logits"
    loss = "loss"
    grad_norm = "grad_norm"
    params = "params"
    val = "val"


class FaultTarget(Enum):
    logits = "logits"
    loss = "loss"
    grads = "grads"
    params = "params"
    val = "val"


# `raise` is a Python keyword, hence the functional form.
RecoveryMode = Enum("RecoveryMode", {"recover": "recover", "raise": "raise"})


@dataclass
class FaultConfig:
    step: int = MISSING
    target: FaultTarget = MISSING
    kind: Any = "nan"  # nan | inf (Hydra reads a bare nan or inf as a float; both spellings work)
    repeat: int = 1  # firings, from the first time training reaches `step`


@dataclass
class StabilityConfig:
    checks: List[CheckName] = field(
        default_factory=lambda: [CheckName.logits, CheckName.loss, CheckName.grad_norm, CheckName.val]
    )
    policy: RecoveryMode = RecoveryMode["recover"]
    max_skips: int = 3  # bad steps within `window` steps before rolling back
    window: int = 50
    lr_backoff: float = 0.5  # the learning rate is multiplied by this at every rollback
    max_rollbacks: int = 3
    inject: List[FaultConfig] = field(default_factory=list)


@dataclass
class ModelConfig:
    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 128
    dropout: float = 0.0
    bias: bool = False
    positions: Positions = Positions.rope
    rope_base: float = 10000.0


@dataclass
class DataConfig:
    name: str = MISSING
    path: Optional[str] = None
    cache_dir: str = MISSING
    val_fraction: float = 0.1
    paragraph_boundaries: bool = False
    prefetch: int = 4


@dataclass
class OptimConfig:
    name: str = "adamw"
    lr: float = 1e-3
    min_lr: float = 1e-4
    betas: List[float] = field(default_factory=lambda: [0.9, 0.99])
    weight_decay: float = 0.1
    grad_clip: float = 1.0
    warmup_iters: int = 100
    lr_decay_iters: Optional[int] = None  # null: decay until max_iters
    schedule: Schedule = Schedule.cosine


@dataclass
class SystemConfig:
    device: Device = Device.auto
    dtype: DType = DType.auto
    compile: bool = False
    peak_flops: float = 312e12  # for MFU; A100 bf16 dense peak
    threads: Optional[int] = None  # torch intra-op threads on CPU; null: torch's default


@dataclass
class ConsoleLoggerConfig:
    progress_bar: bool = True


@dataclass
class JsonlLoggerConfig:
    filename: str = "metrics.jsonl"


@dataclass
class LoggerConfig:
    console: Optional[ConsoleLoggerConfig] = None
    jsonl: Optional[JsonlLoggerConfig] = None


@dataclass
class TransferConfig:
    kind: TransferKind = TransferKind.none
    checkpoint: Optional[str] = None  # a checkpoint of any mode: its trunk initialises this model
    unfreeze_at_iteration: Optional[int] = None  # two_stage
    unfreeze_lr_multiplier: float = 1.0  # the trunk's LR after unfreezing: scheduled LR x this


@dataclass
class CheckpointConfig:
    keep_last: int = 2


@dataclass
class Config:
    mode: ModeConfig = MISSING
    masking: MaskingConfig = MISSING
    stages: StagesConfig = MISSING
    model: ModelConfig = MISSING
    data: DataConfig = MISSING
    optim: OptimConfig = MISSING
    system: SystemConfig = MISSING
    stability: StabilityConfig = MISSING
    transfer: TransferConfig = MISSING
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    run_name: str = MISSING
    seed: int = 1337
    max_iters: int = 1000
    eval_interval: int = 250
    eval_iters: int = 20
    log_interval: int = 10
    batch_size: int = 32
    block_size: int = 128
    gradient_accumulation_steps: int = 1
    resume: str = "none"  # none | auto | <path to a checkpoint>


def register_schemas() -> None:
    ConfigStore.instance().store(name="config_schema", node=Config)


STAGED_MODES = (ModeName.unmasking, ModeName.sequence_scoring)  # their data follows the stages
