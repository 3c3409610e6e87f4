"""Compose a validated config into a ready-to-run Trainer.

Order matters for bad input: everything that can be rejected (config values, the corpus, the
checkpoint to resume) is checked before the first file is written into the run directory.
"""

import copy
from contextlib import nullcontext
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf
from rich.console import Console

from models import GPT
from stability import (
    Fault,
    FaultInjector,
    GradNormCheck,
    LogitsCheck,
    LossCheck,
    ParamsCheck,
    RecoveryPolicy,
    StabilityMonitor,
)
from trainer.batches import BatchStream, Stream, TokenWindows, generator_for
from trainer.callbacks import CallbackList, JsonlLogger, StepReporter
from trainer.checkpoint import CheckpointDirectory, architecture_mismatch, check_vocabulary, load_checkpoint
from trainer.console import ConsoleLogger
from trainer.corpus import PreparedCorpus, load_text, prepare
from trainer.errors import CheckpointError, ConfigError, DataError
from trainer.loop import Data, Trainer
from trainer.modes import load_unmasking_model, make_curriculum, make_objective, model_config, window_length
from trainer.objectives import Objective
from trainer.recovery import Recovery
from trainer.transfer import Transfer
from trainer.validation import fault_kind, validate
from trainer.vocab import Vocabulary


def build_trainer(cfg: DictConfig, run_dir: Path, console: Console, overrides: list[str] = ()) -> Trainer:
    validate(cfg)
    checkpoints = CheckpointDirectory(run_dir / "checkpoints", cfg.checkpoint.keep_last)
    resumed, resumed_path = checkpoint_to_resume(cfg, checkpoints)
    corpus = prepare_corpus(cfg, window_length(cfg))
    vocab = corpus.vocab
    device, autocast, dtype = choose_device(cfg)
    torch.manual_seed(cfg.seed)
    model = GPT(model_config(cfg, vocab)).to(device)
    if resumed is not None:
        check_compatible(resumed, model, vocab)
    transfer = make_transfer(cfg, device)
    if resumed is None and cfg.transfer.kind.value != "none":
        transfer.load_trunk(model, cfg.transfer.checkpoint, vocab)
    filler = load_unmasking_model(cfg, vocab, device, autocast)
    curriculum = make_curriculum(cfg)
    objective = make_objective(cfg, vocab, curriculum, filler)
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)
    faults = FaultInjector(
        [Fault(f.step, f.target.value, fault_kind(f.kind, "stability.inject"), f.repeat) for f in cfg.stability.inject]
    )
    stability = make_stability_monitor(cfg, model, scaler)

    write_run_files(cfg, run_dir, overrides)
    trainer = Trainer(
        cfg=cfg,
        model=torch.compile(model) if cfg.system.compile else model,
        raw_model=model,
        objective=objective,
        data=make_data(cfg, corpus, objective, device),
        optimizer=transfer.optimizer_for(model, unfrozen=False),
        scaler=scaler,
        autocast=autocast,
        device=device,
        checkpoints=checkpoints,
        callbacks=make_callbacks(cfg, run_dir, console, model),
        vocab=vocab,
        run_dir=run_dir,
        stability=stability,
        recovery=Recovery(make_policy(cfg)),
        faults=faults,
        transfer=transfer,
        curriculum=curriculum,
    )
    faults.attach(model, lambda: trainer.state.step)
    stability.attach(model)  # after the faults, so the checks see what the faults did
    if resumed is not None:
        trainer.snapshot = copy.deepcopy(resumed)  # the last good state until this run saves one
        trainer.load_payload(resumed)
        faults.load_state_dict(resumed.get("faults", []))
        trainer.last_checkpoint = resumed_path
    return trainer


def make_data(cfg: DictConfig, corpus: PreparedCorpus, objective: Objective, device: torch.device) -> Data:
    newline = corpus.vocab.chars.index("\n") if "\n" in corpus.vocab.chars else None
    windows = {
        split: TokenWindows(corpus.split(split), window_length(cfg), cfg.data.paragraph_boundaries, newline)
        for split in ("train", "val")
    }
    stream = BatchStream(
        lambda generator, stage, step: objective.make_batch(windows["train"], cfg.batch_size, generator, stage, step),
        cfg.seed,
        cfg.gradient_accumulation_steps,
        depth=cfg.data.prefetch,
    )
    # Its own generator: the validation set is the same whatever the training stream has drawn.
    validation_set = [
        objective.on_device(batch.to(device))
        for batch in objective.validation_set(
            windows["val"],
            cfg.eval_iters * cfg.batch_size,
            cfg.batch_size,
            generator_for(cfg.seed, Stream.VALIDATION, 0),
        )
    ]
    return Data(stream, windows["train"], validation_set)


def make_transfer(cfg: DictConfig, device: torch.device) -> Transfer:
    def make_optimizer(groups: list[dict]) -> torch.optim.Optimizer:
        return torch.optim.AdamW(groups, lr=cfg.optim.lr, betas=tuple(cfg.optim.betas), fused=device.type == "cuda")

    t = cfg.transfer
    return Transfer(
        t.kind.value, t.unfreeze_at_iteration, t.unfreeze_lr_multiplier, cfg.optim.weight_decay, make_optimizer
    )


def checkpoint_to_resume(cfg: DictConfig, checkpoints: CheckpointDirectory) -> tuple[dict | None, Path | None]:
    """The checkpoint named by `resume`, loaded, and its path; (None, None) for a fresh start."""
    if cfg.resume == "none":
        if checkpoints.latest() is not None:
            raise ConfigError(
                "resume",
                f"{checkpoints.directory.parent} already holds checkpoints of a run",
                "resume=auto to continue it, or another run_name for a new run",
            )
        return None, None
    path = checkpoints.latest() if cfg.resume == "auto" else Path(cfg.resume)
    if path is None:
        return None, None
    return load_checkpoint(path), path


def prepare_corpus(cfg: DictConfig, window: int) -> PreparedCorpus:
    text = load_text(cfg.data.name, cfg.data.path)
    val_chars = int(len(text) * cfg.data.val_fraction)
    if min(val_chars, len(text) - val_chars) <= window:
        raise DataError(
            "data",
            f"a corpus of {len(text):,} characters gives a split of {val_chars:,} tokens, "
            f"too short for windows of {window}",
            f"a text with more than {int((window + 1) / cfg.data.val_fraction):,} characters, or a smaller block_size",
        )
    return prepare(text, cfg.data.cache_dir, cfg.data.val_fraction)


def choose_device(cfg: DictConfig):
    """(device, autocast context, compute dtype) from system.device and system.dtype."""
    wanted = cfg.system.device.value
    if wanted == "cuda" and not torch.cuda.is_available():
        raise ConfigError("system.device", "cuda was asked for but no CUDA device is available", "auto, cpu")
    device = torch.device(
        "cuda" if wanted == "auto" and torch.cuda.is_available() else "cpu" if wanted == "auto" else wanted
    )
    if cfg.system.threads:
        torch.set_num_threads(cfg.system.threads)
    dtype_name = cfg.system.dtype.value
    if dtype_name == "auto":
        dtype_name = (
            "float32" if device.type == "cpu" else ("bfloat16" if torch.cuda.is_bf16_supported() else "float16")
        )
    dtype = getattr(torch, dtype_name)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    autocast = nullcontext() if dtype == torch.float32 else torch.autocast(device.type, dtype=dtype)
    return device, autocast, dtype


def check_compatible(payload: dict, model: GPT, vocab: Vocabulary) -> None:
    differences = architecture_mismatch(payload["architecture"], model.config.architecture())
    if differences:
        raise CheckpointError(
            "resume",
            "the checkpoint's architecture differs from the config: " + ", ".join(differences),
            "a checkpoint of the configured architecture, or matching model.* overrides",
        )
    check_vocabulary(payload, vocab, "resume", "the data the checkpoint was trained on")


def make_stability_monitor(cfg: DictConfig, model: GPT, scaler: torch.amp.GradScaler) -> StabilityMonitor:
    checks = {c.value for c in cfg.stability.checks}
    available = {
        "logits": LogitsCheck,
        "loss": LossCheck,
        "grad_norm": lambda: GradNormCheck(scaler.is_enabled()),
        "params": lambda: ParamsCheck(list(model.parameters())),
    }
    return StabilityMonitor(
        [make() for name, make in available.items() if name in checks], check_val_loss="val" in checks
    )


def make_policy(cfg: DictConfig) -> RecoveryPolicy:
    s = cfg.stability
    return RecoveryPolicy(
        mode=s.policy.value,
        max_skips=s.max_skips,
        window=s.window,
        lr_backoff=s.lr_backoff,
        max_rollbacks=s.max_rollbacks,
    )


def make_callbacks(cfg: DictConfig, run_dir: Path, console: Console, model: GPT) -> CallbackList:
    callbacks = [StepReporter(cfg.log_interval, model.estimate_flops_per_token(), cfg.system.peak_flops)]
    if cfg.logger.console is not None:
        callbacks.append(ConsoleLogger(console, cfg.logger.console.progress_bar))
    if cfg.logger.jsonl is not None:
        callbacks.append(JsonlLogger(run_dir / cfg.logger.jsonl.filename))
    return CallbackList(callbacks)


def write_run_files(cfg: DictConfig, run_dir: Path, overrides: list[str]) -> None:
    """The resolved config and the command-line overrides, as Hydra would write them to .hydra/."""
    hydra_dir = run_dir / ".hydra"
    hydra_dir.mkdir(parents=True, exist_ok=True)
    OmegaConf.save(cfg, hydra_dir / "config.yaml", resolve=True)
    OmegaConf.save(OmegaConf.create(list(overrides)), hydra_dir / "overrides.yaml")
