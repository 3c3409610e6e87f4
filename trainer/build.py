"""Compose a validated config into a ready-to-run Trainer.

Order matters for bad input: everything that can be rejected (config values, the corpus, the
checkpoint to resume, the checkpoints a mode or a transfer reads) is checked before the first file
is written, into the run directory or the data cache.
"""

import copy
from pathlib import Path

import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf
from rich.console import Console

from models import GPT
from stability import (
    CheckName,
    FaultInjector,
    GradNormCheck,
    LogitsCheck,
    LossCheck,
    ParamsCheck,
    StabilityMonitor,
)
from trainer.batches import BatchStream, Stream, TokenWindows, generator_for
from trainer.checkpoint import CheckpointDirectory, architecture_mismatch, check_vocabulary, load_checkpoint
from trainer.config import Config
from trainer.contract import check
from trainer.corpus import PreparedCorpus, load_text, prepare
from trainer.distributed import ONE_PROCESS, Distributed
from trainer.errors import CheckpointError, DataError
from trainer.loop import Trainer
from trainer.objectives import Filler, Objective
from trainer.recovery import Recovery
from trainer.reporting.callbacks import CallbackList
from trainer.reporting.samples import SampleLog
from trainer.reporting.steps import StepReporter
from trainer.resume import reconcile, resume_point
from trainer.sampling.during_training import make_sampler
from trainer.snapshot import write_snapshot
from trainer.state import TrainState
from trainer.step import Data
from trainer.transfer import Transfer, TransferKind
from trainer.vocab import Vocabulary


def build_trainer(
    cfg: DictConfig, run_dir: Path, console: Console, overrides: list[str] = (), dist: Distributed = ONE_PROCESS
) -> Trainer:
    """The Trainer of a composed config. Under several processes every rank builds the same one;
    rank 0 alone writes files and reports (the other ranks get no loggers)."""
    run = check(cfg)
    checkpoints = run.checkpoint.build(run_dir)
    resumed_path = resume_point(run, checkpoints)
    resumed = load_checkpoint(resumed_path) if resumed_path is not None else None
    corpus = prepare_corpus(run)
    vocab = corpus.vocab
    device, autocast, dtype = run.system.resolve()
    torch.manual_seed(run.seed)
    model = run.model.build(vocab.size, run.block_size, run.mode.attention, run.mode.head, run.mode.num_classes).to(
        device
    )
    if resumed is not None:
        check_compatible(resumed, model, vocab)
    transfer = Transfer(
        run.transfer, run.optim.weight_decay, lambda groups: run.optim.build(groups, device, run.system.fused_adamw)
    )
    if resumed is None and run.transfer.kind != TransferKind.none:
        transfer.load_trunk(model, run.transfer.checkpoint, vocab)
    filler = None
    if run.mode.uses_unmasking_model():
        filler = Filler.load(run.mode.unmasking_checkpoint, vocab, run.window_length, run.mode.fill, device, autocast)
    curriculum = run.stages.build(run.masking) if run.mode.staged else None
    objective = run.mode.build_objective(vocab, curriculum, filler, run.loss)
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)
    faults = FaultInjector(list(run.stability.inject))
    stability = make_stability_monitor(run, model, scaler, dist)
    record = OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)
    sampler = make_sampler(run, vocab, objective, autocast)  # may refuse the prompt
    # a logger may refuse (wandb credentials); the other ranks report nothing
    callbacks = make_callbacks(run, run_dir, console, model, record, dist) if dist.is_main else CallbackList([])

    # Everything is accepted: from here on files are written (by rank 0, once every rank has read).
    dist.barrier()
    if resumed is not None:
        changes = reconcile(resumed, record, run)
        for line in changes if not run.eval_only and dist.is_main else []:  # an evaluation changes nothing
            console.print(line, highlight=False, soft_wrap=True)
    if dist.is_main:
        write_files(run, corpus, record, run_dir, overrides)
    trainer = Trainer(
        cfg=run,
        config_record=record,
        model=torch.compile(model) if run.system.compile else model,
        raw_model=model,
        objective=objective,
        data=make_data(run, corpus, objective, device, dist.shard(range(run.gradient_accumulation_steps))),
        sampler=sampler if dist.is_main else None,  # rank 0 alone prints and keeps the samples
        optimizer=transfer.optimizer_for(model, unfrozen=False),
        scaler=scaler,
        autocast=autocast,
        device=device,
        checkpoints=checkpoints,
        callbacks=callbacks,
        vocab=vocab,
        run_dir=run_dir,
        stability=stability,
        recovery=Recovery(run.stability),
        faults=faults,
        transfer=transfer,
        curriculum=curriculum,
        dist=dist,
    )
    faults.attach(model, lambda: trainer.state.step)
    stability.attach(model)  # after the faults, so the checks see what the faults did
    if resumed is not None:
        trainer.snapshot = copy.deepcopy(resumed)  # the last good state until this run saves one
        trainer.load_payload(resumed)
        faults.load_state_dict(resumed.get("faults", []))
        trainer.last_checkpoint = trainer.resumed_from = resumed_path
        if not run.eval_only and dist.is_main:
            continue_line(checkpoints, trainer.state, console)
    return trainer


def write_files(run: Config, corpus: PreparedCorpus, record: dict, run_dir: Path, overrides: list[str]) -> None:
    """The data cache entry, and for a training run .hydra/ and the source snapshot."""
    corpus.save()
    if not run.eval_only:
        write_run_files(record, run_dir, overrides)
        write_snapshot(run_dir)


def continue_line(checkpoints: CheckpointDirectory, state: TrainState, console: Console) -> None:
    """The resumed checkpoint's step is now the end of the run folder's line of training, and
    best.pt holds the best state of that line."""
    checkpoints.branch_from(state.step)
    repaired = checkpoints.check_best(state.best_step)
    if repaired is not None:
        console.print(repaired, highlight=False, soft_wrap=True)


def make_data(
    run: Config, corpus: PreparedCorpus, objective: Objective, device: torch.device, micro_steps: range
) -> Data:
    """The training stream of this process's `micro_steps` of each step, and the validation set."""
    newline = corpus.vocab.chars.index("\n") if "\n" in corpus.vocab.chars else None
    windows = {
        split: TokenWindows(corpus.split(split), run.window_length, run.data.paragraph_boundaries, newline)
        for split in ("train", "val")
    }
    stream = BatchStream(
        lambda generator, stage, step: objective.make_batch(windows["train"], run.batch_size, generator, stage, step),
        run.seed,
        len(micro_steps),
        depth=run.data.prefetch,
        first_micro_step=micro_steps.start,
    )
    # Its own generator: the validation set is the same whatever the training stream has drawn.
    validation_set = [
        objective.on_device(batch.to(device))
        for batch in objective.validation_set(
            windows["val"],
            run.eval_iters * run.batch_size,
            run.batch_size,
            generator_for(run.seed, Stream.VALIDATION, 0),
        )
    ]
    return Data(stream, windows["train"], validation_set)


def prepare_corpus(run: Config) -> PreparedCorpus:
    window = run.window_length
    text = load_text(run.data.name, run.data.path)
    val_chars = int(len(text) * run.data.val_fraction)
    if min(val_chars, len(text) - val_chars) <= window:
        raise DataError(
            "data",
            f"a corpus of {len(text):,} characters gives a split of {val_chars:,} tokens, "
            f"too short for windows of {window}",
            f"a text with more than {int((window + 1) / run.data.val_fraction):,} characters, or a smaller block_size",
        )
    return prepare(text, run.data.cache_dir, run.data.val_fraction)


def check_compatible(payload: dict, model: GPT, vocab: Vocabulary) -> None:
    differences = architecture_mismatch(payload["architecture"], model.config.architecture())
    if differences:
        raise CheckpointError(
            "resume",
            "the checkpoint's architecture differs from the config: " + ", ".join(differences),
            "a checkpoint of the configured architecture, or matching model.* overrides",
        )
    check_vocabulary(payload, vocab, "resume", "the data the checkpoint was trained on")


def make_stability_monitor(
    run: Config, model: GPT, scaler: torch.amp.GradScaler, dist: Distributed
) -> StabilityMonitor:
    available = {
        CheckName.logits: LogitsCheck,
        CheckName.loss: LossCheck,
        CheckName.grad_norm: lambda: GradNormCheck(scaler.is_enabled()),
        CheckName.params: lambda: ParamsCheck(list(model.parameters())),
    }
    checks = set(run.stability.checks)
    return StabilityMonitor(
        [make() for name, make in available.items() if name in checks],
        check_val_loss=CheckName.val in checks,
        agree=dist.any_,  # every rank reaches the same verdict
    )


def make_callbacks(
    run: Config, run_dir: Path, console: Console, model: GPT, record: dict, dist: Distributed
) -> CallbackList:
    """The step reporter and the chosen loggers; eval_only writes its own file and no logger's.
    Throughput counts the tokens of every rank, so MFU is measured against every rank's device."""
    peak_flops = run.system.peak_flops * dist.world_size
    callbacks = [StepReporter(run.log_interval, model.estimate_flops_per_token(), peak_flops)]
    loggers = run.logger
    if loggers.console is not None:
        callbacks.append(loggers.console.build(console))
    if not run.eval_only:
        if loggers.jsonl is not None:
            callbacks.append(loggers.jsonl.build(run_dir))
        if loggers.plot is not None:  # after the jsonl logger: it draws what that one wrote
            callbacks.append(loggers.plot.build(run_dir, loggers.jsonl.filename))
        if loggers.wandb is not None:
            callbacks.append(loggers.wandb.build(run_dir, record, sweep_name()))
        if run.sample.num_samples:
            callbacks.append(SampleLog(run_dir))
    return CallbackList(callbacks)


def sweep_name() -> str | None:
    """The sweep's folder name when this run is a job of a sweep (the wandb group of its jobs)."""
    if not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.MULTIRUN:
        return None
    return Path(HydraConfig.get().sweep.dir).name


def write_run_files(record: dict, run_dir: Path, overrides: list[str]) -> None:
    """The resolved config and the command-line overrides, as Hydra would write them to .hydra/."""
    hydra_dir = run_dir / ".hydra"
    hydra_dir.mkdir(parents=True, exist_ok=True)
    OmegaConf.save(OmegaConf.create(record), hydra_dir / "config.yaml")
    OmegaConf.save(OmegaConf.create(list(overrides)), hydra_dir / "overrides.yaml")
