"""The cross-field rules of a composed config: ranges and combinations a schema type cannot express.

`validate` raises `ConfigError` with one readable line naming the key and what is allowed.
"""

import math
from typing import Any

from omegaconf import DictConfig, OmegaConf

import masking
from trainer.config import STAGED_MODES, ModeName, ReplacementSource, TransferKind
from trainer.errors import ConfigError


def validate(cfg: DictConfig) -> None:
    """Check what the schema cannot: ranges and combinations. Raises ConfigError."""
    for key in (
        "max_iters",
        "eval_interval",
        "eval_iters",
        "log_interval",
        "batch_size",
        "block_size",
        "gradient_accumulation_steps",
    ):
        minimum = 0 if key == "max_iters" else 1
        if cfg[key] < minimum:
            raise ConfigError(key, f"{cfg[key]} is too small", f"an integer >= {minimum}")
    _check_range("optim.lr", cfg.optim.lr, 0, None, "a number > 0", open_low=True)
    _check_range("optim.min_lr", cfg.optim.min_lr, 0, cfg.optim.lr, f"a number in [0, optim.lr={cfg.optim.lr}]")
    _check_range("optim.grad_clip", cfg.optim.grad_clip, 0, None, "a number >= 0 (0 disables clipping)")
    _check_range("optim.warmup_iters", cfg.optim.warmup_iters, 0, None, "an integer >= 0")
    _check_range("model.dropout", cfg.model.dropout, 0, 1, "a number in [0, 1)", open_high=True)
    _check_range("data.val_fraction", cfg.data.val_fraction, 0, 1, "a number in (0, 1)", open_low=True, open_high=True)
    if cfg.model.n_embd % cfg.model.n_head:
        raise ConfigError(
            "model.n_head",
            f"{cfg.model.n_head} does not divide model.n_embd={cfg.model.n_embd}",
            "a divisor of model.n_embd",
        )
    _check_stability(cfg.stability)
    if cfg.checkpoint.keep_last < 1:
        raise ConfigError("checkpoint.keep_last", f"{cfg.checkpoint.keep_last}", "an integer >= 1")
    _check_mode(cfg)
    _check_transfer(cfg.transfer)
    if cfg.transfer.kind in (TransferKind.feature_extraction, TransferKind.two_stage) and cfg.mode.name in (
        ModeName.language_model,
        ModeName.unmasking,
    ):
        raise ConfigError(
            "transfer",
            f"{cfg.transfer.kind.value} freezes the trunk, and a {cfg.mode.name.value} "
            "model's head is tied to the trunk's embedding: nothing would train",
            "none or fine_tuning for this mode",
        )
    if cfg.mode.name in STAGED_MODES:
        build_masking(cfg.masking, "masking")
        for split in ("train", "validation"):
            for index, stage in enumerate(cfg.stages[split] or []):
                build_masking(stage, f"stages.{split}[{index}]")
                if stage.val_loss_stale_count < 1:
                    raise ConfigError(
                        f"stages.{split}[{index}].val_loss_stale_count",
                        f"{stage.val_loss_stale_count} is too small",
                        "an integer >= 1",
                    )
        if cfg.stages.train is not None and not cfg.stages.train:
            raise ConfigError("stages.train", "the list is empty", "a list of stages, or null for the masking group")


def _check_mode(cfg: DictConfig) -> None:
    mode = cfg.mode
    if mode.name == ModeName.token_classification:
        _check_range("mode.rate_min", mode.rate_min, 0, 1, "a number in (0, 1]", open_low=True)
        _check_range(
            "mode.rate_max", mode.rate_max, mode.rate_min, 1, f"a number in [mode.rate_min={mode.rate_min}, 1]"
        )
        _check_range("mode.rate_warmup", mode.rate_warmup, 0, None, "an integer >= 0")
        _check_range("mode.sticky_p1", mode.sticky_p1, 0, 1, "a number in (0, 1]", open_low=True)
        _check_range("mode.sticky_p2", mode.sticky_p2, 0, 1, "a number in [0, 1]")
        if mode.num_classes != 2:
            raise ConfigError("mode.num_classes", f"{mode.num_classes}", "2 (original / replaced)")
    if uses_unmasking_model(mode) and not mode.unmasking_checkpoint:
        raise ConfigError(
            "mode.unmasking_checkpoint",
            f"missing: {mode.name.value} fills positions with a frozen unmasking model",
            "the path of a checkpoint of an unmasking run",
        )


def uses_unmasking_model(mode: DictConfig) -> bool:
    """Whether the mode fills positions with a frozen unmasking model (mode.unmasking_checkpoint)."""
    return mode.name == ModeName.sequence_scoring or (
        mode.name == ModeName.token_classification and mode.source == ReplacementSource.model
    )


def _check_transfer(transfer: DictConfig) -> None:
    if transfer.kind != TransferKind.none and not transfer.checkpoint:
        raise ConfigError(
            "transfer.checkpoint", f"missing for transfer={transfer.kind.value}", "the path of a checkpoint of any mode"
        )
    if transfer.kind == TransferKind.two_stage and (transfer.unfreeze_at_iteration or 0) < 1:
        raise ConfigError(
            "transfer.unfreeze_at_iteration",
            f"{transfer.unfreeze_at_iteration}",
            "an integer >= 1 for transfer=two_stage",
        )
    _check_range(
        "transfer.unfreeze_lr_multiplier", transfer.unfreeze_lr_multiplier, 0, None, "a number > 0", open_low=True
    )


def _check_stability(stability: DictConfig) -> None:
    for key in ("max_skips", "window"):
        if stability[key] < 1:
            raise ConfigError(f"stability.{key}", f"{stability[key]} is too small", "an integer >= 1")
    if stability.max_rollbacks < 0:
        raise ConfigError("stability.max_rollbacks", f"{stability.max_rollbacks} is negative", "an integer >= 0")
    _check_range("stability.lr_backoff", stability.lr_backoff, 0, 1, "a number in (0, 1]", open_low=True)
    for index, fault in enumerate(stability.inject):
        if fault.step < 0 or fault.repeat < 1:
            raise ConfigError(
                f"stability.inject[{index}]", f"step={fault.step}, repeat={fault.repeat}", "step >= 0 and repeat >= 1"
            )
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
    params = {k: v for k, v in OmegaConf.to_container(node).items() if v is not None and k not in NOT_MASKING_PARAMS}
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
