"""Config schemas (registered with Hydra's ConfigStore) and the cross-field rules in `validate`.

The schemas make a misspelt key fail when Hydra composes the config; `validate` catches what a
type cannot express (ranges, combinations) and raises `ConfigError` with one readable line.
"""

import math
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, List, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf

import masking
from trainer.errors import ConfigError


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
    checks: List[CheckName] = field(default_factory=lambda: [CheckName.logits, CheckName.loss,
                                                             CheckName.grad_norm, CheckName.val])
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


def validate(cfg: DictConfig) -> None:
    """Check what the schema cannot: ranges and combinations. Raises ConfigError."""
    for key in ("max_iters", "eval_interval", "eval_iters", "log_interval", "batch_size",
                "block_size", "gradient_accumulation_steps"):
        minimum = 0 if key == "max_iters" else 1
        if cfg[key] < minimum:
            raise ConfigError(key, f"{cfg[key]} is too small", f"an integer >= {minimum}")
    _check_range("optim.lr", cfg.optim.lr, 0, None, "a number > 0", open_low=True)
    _check_range("optim.min_lr", cfg.optim.min_lr, 0, cfg.optim.lr, f"a number in [0, optim.lr={cfg.optim.lr}]")
    _check_range("optim.grad_clip", cfg.optim.grad_clip, 0, None, "a number >= 0 (0 disables clipping)")
    _check_range("optim.warmup_iters", cfg.optim.warmup_iters, 0, None, "an integer >= 0")
    _check_range("model.dropout", cfg.model.dropout, 0, 1, "a number in [0, 1)", open_high=True)
    _check_range("data.val_fraction", cfg.data.val_fraction, 0, 1, "a number in (0, 1)", open_low=True,
                 open_high=True)
    if cfg.model.n_embd % cfg.model.n_head:
        raise ConfigError("model.n_head", f"{cfg.model.n_head} does not divide model.n_embd={cfg.model.n_embd}",
                          "a divisor of model.n_embd")
    _check_stability(cfg.stability)
    if cfg.checkpoint.keep_last < 1:
        raise ConfigError("checkpoint.keep_last", f"{cfg.checkpoint.keep_last}", "an integer >= 1")
    _check_mode(cfg)
    _check_transfer(cfg.transfer)
    if cfg.transfer.kind in (TransferKind.feature_extraction, TransferKind.two_stage) and \
            cfg.mode.name in (ModeName.language_model, ModeName.unmasking):
        raise ConfigError("transfer", f"{cfg.transfer.kind.value} freezes the trunk, and a {cfg.mode.name.value} "
                          "model's head is tied to the trunk's embedding: nothing would train",
                          "none or fine_tuning for this mode")
    if cfg.mode.name in STAGED_MODES:
        build_masking(cfg.masking, "masking")
        for split in ("train", "validation"):
            for index, stage in enumerate(cfg.stages[split] or []):
                build_masking(stage, f"stages.{split}[{index}]")
                if stage.val_loss_stale_count < 1:
                    raise ConfigError(f"stages.{split}[{index}].val_loss_stale_count",
                                      f"{stage.val_loss_stale_count} is too small", "an integer >= 1")
        if cfg.stages.train is not None and not cfg.stages.train:
            raise ConfigError("stages.train", "the list is empty", "a list of stages, or null for the masking group")


STAGED_MODES = (ModeName.unmasking, ModeName.sequence_scoring)


def _check_mode(cfg: DictConfig) -> None:
    mode = cfg.mode
    if mode.name == ModeName.token_classification:
        _check_range("mode.rate_min", mode.rate_min, 0, 1, "a number in (0, 1]", open_low=True)
        _check_range("mode.rate_max", mode.rate_max, mode.rate_min, 1, f"a number in [mode.rate_min={mode.rate_min}, 1]")
        _check_range("mode.rate_warmup", mode.rate_warmup, 0, None, "an integer >= 0")
        _check_range("mode.sticky_p1", mode.sticky_p1, 0, 1, "a number in (0, 1]", open_low=True)
        _check_range("mode.sticky_p2", mode.sticky_p2, 0, 1, "a number in [0, 1]")
        if mode.num_classes != 2:
            raise ConfigError("mode.num_classes", f"{mode.num_classes}", "2 (original / replaced)")
    needs_generator = mode.name == ModeName.sequence_scoring or (
        mode.name == ModeName.token_classification and mode.source == ReplacementSource.model)
    if needs_generator and not mode.unmasking_checkpoint:
        raise ConfigError("mode.unmasking_checkpoint", f"missing: {mode.name.value} fills positions with a frozen "
                          "unmasking model", "the path of a checkpoint of an unmasking run")


def _check_transfer(transfer: DictConfig) -> None:
    if transfer.kind != TransferKind.none and not transfer.checkpoint:
        raise ConfigError("transfer.checkpoint", f"missing for transfer={transfer.kind.value}",
                          "the path of a checkpoint of any mode")
    if transfer.kind == TransferKind.two_stage and (transfer.unfreeze_at_iteration or 0) < 1:
        raise ConfigError("transfer.unfreeze_at_iteration", f"{transfer.unfreeze_at_iteration}",
                          "an integer >= 1 for transfer=two_stage")
    _check_range("transfer.unfreeze_lr_multiplier", transfer.unfreeze_lr_multiplier, 0, None, "a number > 0",
                 open_low=True)


def _check_stability(stability: DictConfig) -> None:
    for key in ("max_skips", "window"):
        if stability[key] < 1:
            raise ConfigError(f"stability.{key}", f"{stability[key]} is too small", "an integer >= 1")
    if stability.max_rollbacks < 0:
        raise ConfigError("stability.max_rollbacks", f"{stability.max_rollbacks} is negative", "an integer >= 0")
    _check_range("stability.lr_backoff", stability.lr_backoff, 0, 1, "a number in (0, 1]", open_low=True)
    for index, fault in enumerate(stability.inject):
        if fault.step < 0 or fault.repeat < 1:
            raise ConfigError(f"stability.inject[{index}]", f"step={fault.step}, repeat={fault.repeat}",
                              "step >= 0 and repeat >= 1")
        fault_kind(fault.kind, f"stability.inject[{index}].kind")


def fault_kind(value: Any, key: str) -> str:
    """'nan' or 'inf', whether the config holds the word or the float Hydra made of it."""
    if isinstance(value, float) and (math.isnan(value) or math.isinf(value)):
        return "nan" if math.isnan(value) else "inf"
    if value in ("nan", "inf"):
        return value
    raise ConfigError(key, f"{value!r} is not a fault kind", "nan, inf")


NOT_MASKING_PARAMS = ("type", "val_loss_stale_count")


def build_masking(node: Any, key: str) -> masking.MaskingStrategy:
    """Turn a masking config node into a strategy; bad values become a ConfigError under `key`."""
    params = {k: v for k, v in OmegaConf.to_container(node).items()
              if v is not None and k not in NOT_MASKING_PARAMS}
    if "corruption" in params:
        corruption = params.pop("corruption")
        try:
            params["corruption"] = masking.Corruption(**corruption)
        except masking.MaskingConfigError as err:
            raise ConfigError(f"{key}.corruption.{err.key}", _problem_of(err), err.allowed) from None
    try:
        return masking.build_strategy(node.type, **params)
    except masking.MaskingConfigError as err:
        raise ConfigError(f"{key}.{err.key}", _problem_of(err), err.allowed) from None


def _problem_of(err: masking.MaskingConfigError) -> str:
    return err.reason if err.value is masking.errors.NO_VALUE else f"{err.reason} (got {err.value!r})"


def _check_range(key, value, low, high, allowed, open_low=False, open_high=False):
    too_low = value <= low if open_low else value < low
    too_high = high is not None and (value >= high if open_high else value > high)
    if too_low or too_high:
        raise ConfigError(key, f"{value} is out of range", allowed)
