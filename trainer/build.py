"""Compose a validated config into a ready-to-run Trainer.

Order matters for bad input: everything that can be rejected (config values, the corpus, the
checkpoint to resume, the checkpoints a mode or a transfer reads) is checked before the first file
is written, into the run directory or the data cache.
"""

from pathlib import Path

import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import OmegaConf
from rich.console import Console

from models import GPT
from stability import CheckName, FaultInjector, GradNormCheck, LogitsCheck, LossCheck, ParamsCheck, StabilityMonitor
from trainer.batches import BatchStream, Stream, TokenWindows, generator_for
from trainer.checkpoint import load_checkpoint, load_reference
from trainer.compatibility import require_compatible
from trainer.config import Config
from trainer.corpus import DataConfig, PreparedCorpus, prepare
from trainer.curriculum import Curriculum
from trainer.distributed import ONE_PROCESS, Distributed
from trainer.ema import WeightAverage
from trainer.errors import UserError
from trainer.guard import Guard
from trainer.interrupt import check_stop, interruptible
from trainer.loop import Trainer
from trainer.objectives import Filler, Objective
from trainer.optimization import Optimization
from trainer.plan import JobPlan, reconciled
from trainer.reporting.callbacks import CallbackList
from trainer.reporting.samples import Samples
from trainer.reporting.steps import StepReporter
from trainer.resume import skipped_damaged
from trainer.run_files import RunFiles
from trainer.runtime import Runtime
from trainer.sampling.during_training import Sampler, make_sampler
from trainer.snapshot import write_snapshot
from trainer.step import Data
from trainer.transfer import TransferKind, load_trunk
from trainer.vocab import Vocabulary


def build_trainer(plan: JobPlan, console: Console, dist: Distributed = ONE_PROCESS) -> Trainer:
    """The Trainer of a job plan. Under several processes every rank builds the same one; rank 0
    alone writes files and reports (the other ranks get no loggers)."""
    resumed = load_checkpoint(plan.resume_from) if plan.resume_from is not None else None
    corpus = prepare_corpus(plan.run.data, plan.run.tokenizer, dist)
    try:
        return built(plan, resumed, corpus, console, dist)
    except BaseException:
        corpus.discard()  # a corpus prepared for a refused run is not kept
        raise


def built(plan: JobPlan, resumed: dict | None, corpus: PreparedCorpus, console: Console, dist: Distributed) -> Trainer:
    vocab = corpus.vocab
    windows = {split: corpus.windows(split, plan.run.window_length, plan.run.data) for split in ("train", "val")}
    runtime = make_runtime(plan.run, vocab, dist)
    plan, changes = continued(plan, resumed, runtime.raw_model, vocab)
    run = plan.run
    if resumed is None and run.transfer.kind != TransferKind.none:
        changes.append(load_trunk(runtime.raw_model, run.transfer.checkpoint, vocab))  # says which file
    curriculum = run.stages.build(run.masking) if run.mode.staged else Curriculum.unstaged()
    objective = make_objective(run, vocab, curriculum, runtime)
    scaler = torch.amp.GradScaler(runtime.device.type, enabled=runtime.dtype == torch.float16)
    guard = make_guard(run, runtime, scaler)
    reference = load_reference(run.sample.reference, vocab, runtime.device, "sample.reference")  # may refuse it
    sampler = make_sampler(run, vocab, objective, runtime.autocast, reference)  # may refuse the prompt
    # a logger may refuse (wandb credentials); the other ranks report nothing
    callbacks = make_callbacks(plan, console, runtime, sampler) if dist.is_main else CallbackList([], runtime.timer)

    # Everything is accepted: from here on files are written (by rank 0, once every rank has read).
    dist.barrier()
    for line in [*changes, *run.ramp_notes()] if not run.eval_only and dist.is_main else []:
        console.print(line, highlight=False, soft_wrap=True)  # (an evaluation changes nothing)
    if dist.is_main:
        write_files(run, corpus, plan.record, plan.run_dir, plan.overrides)
    micro_steps = dist.shard(range(run.gradient_accumulation_steps))
    trainer = Trainer(
        run,
        runtime,
        objective,
        make_data(run, windows, objective, runtime.device, micro_steps, corpus),
        make_optimization(run, runtime, scaler),
        guard,
        curriculum,
        RunFiles(plan.run_dir, run.checkpoint.build(plan.run_dir), plan.record, vocab, runtime.timer, dist.is_main),
        callbacks,
    )
    if resumed is not None:
        trainer.resume(plan.resume_from, resumed)
        if not run.eval_only and dist.is_main:
            continue_line(plan, trainer, console)
    return trainer


def continued(plan: JobPlan, resumed: dict | None, model: GPT, vocab: Vocabulary) -> tuple[JobPlan, list[str]]:
    """The plan of a resumed run, whose checkpoint must fit the model and the vocabulary: it keeps the
    schedule horizons of the run it continues; also the lines that say what the resume changes."""
    if resumed is None:
        return plan, []
    check_compatible(resumed, model, vocab)
    return reconciled(plan, resumed)


def make_runtime(run: Config, vocab: Vocabulary, dist: Distributed) -> Runtime:
    """The model (seeded: the same initial weights for every rank and every run of this seed)."""
    device, autocast, dtype = run.system.resolve()
    torch.manual_seed(run.seed)
    mode = run.mode
    model = run.model.build(vocab.size, run.block_size, mode.attention, mode.head, mode.num_classes).to(device)
    return Runtime(torch.compile(model) if run.system.compile else model, model, device, autocast, dtype, dist)


def make_objective(run: Config, vocab: Vocabulary, curriculum: Curriculum, runtime: Runtime) -> Objective:
    """The mode's objective; a mode that fills positions loads its frozen unmasking model."""
    filler = None
    if run.mode.uses_unmasking_model():
        filler = Filler.load(
            run.mode.unmasking_checkpoint, vocab, run.window_length, run.mode.fill, runtime.device, runtime.autocast
        )
    return run.mode.build_objective(vocab, curriculum if run.mode.staged else None, filler, run.loss)


def make_optimization(run: Config, runtime: Runtime, scaler: torch.amp.GradScaler) -> Optimization:
    optim = run.optim
    return Optimization(
        runtime.raw_model,
        lambda groups: optim.build(groups, runtime.device, run.system.fused_adamw),
        scaler,
        lambda step: optim.learning_rate(step, run.max_iters),
        run.transfer,
        optim.weight_decay,
        optim.grad_clip,
        runtime.timer,
        WeightAverage(runtime.raw_model, optim.ema_decay, optim.ema_start) if optim.ema_decay > 0 else None,
    )


def make_guard(run: Config, runtime: Runtime, scaler: torch.amp.GradScaler) -> Guard:
    available = {
        CheckName.logits: LogitsCheck,
        CheckName.loss: LossCheck,
        CheckName.grad_norm: lambda: GradNormCheck(scaler.is_enabled()),
        CheckName.params: lambda: ParamsCheck(list(runtime.raw_model.parameters())),
    }
    checks = set(run.stability.checks)
    monitor = StabilityMonitor(
        [make() for name, make in available.items() if name in checks],
        check_val_loss=CheckName.val in checks,
        agree=runtime.dist.any_,  # every rank reaches the same verdict
    )
    return Guard(monitor, run.stability, FaultInjector(list(run.stability.inject)), runtime.timer)


def write_files(run: Config, corpus: PreparedCorpus, record: dict, run_dir: Path, overrides: list[str]) -> None:
    """The data cache entry, and for a training run .hydra/ and the source snapshot; nothing when a
    stop signal came while the job was built."""
    check_stop()
    corpus.save()
    if not run.eval_only:
        write_run_files(record, run_dir, overrides)
        write_snapshot(run_dir)


def continue_line(plan: JobPlan, trainer: Trainer, console: Console) -> None:
    """The resumed checkpoint's step is now the end of the run folder's line of training, and
    best.pt holds the best state of that line."""
    checkpoints, state = trainer.files.checkpoints, trainer.state
    lines = [skipped_damaged(plan.run, checkpoints, plan.resume_from)]
    checkpoints.branch_from(state.step)
    lines.append(checkpoints.check_best(state.best_step))
    for line in filter(None, lines):
        console.print(line, highlight=False, soft_wrap=True)


def make_data(
    run: Config,
    windows: dict[str, TokenWindows],
    objective: Objective,
    device: torch.device,
    micro_steps: range,
    corpus: PreparedCorpus,
) -> Data:
    """The training stream of this process's `micro_steps` of each step, and the validation set."""
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
    return Data(stream, windows["train"], validation_set, corpus.bytes_per_token("val"), corpus.vocab.kind == "char")


@interruptible()  # a stop signal ends it at once; what it wrote is a staging folder, removed
def prepare_corpus(data: DataConfig, tokenizer, dist: Distributed = ONE_PROCESS) -> PreparedCorpus:
    """A run's corpus (data and tokenizer configs), from the cache or prepared now (kept by `save`).
    Under several processes rank 0 prepares it, and the others read its files (staged until rank 0
    keeps them); a corpus rank 0 refuses is refused on every rank."""
    if not dist.enabled:
        return prepare(data, tokenizer)
    try:
        corpus = prepare(data, tokenizer) if dist.is_main else None
        prepared = dist.share((str(corpus.directory), corpus.manifest, str(corpus.folder)) if corpus else None)
    except UserError as err:
        dist.share(err)
        raise
    if isinstance(prepared, UserError):
        raise prepared
    return corpus or PreparedCorpus(Path(prepared[0]), prepared[1], Path(prepared[2]))


def check_compatible(payload: dict, model: GPT, vocab: Vocabulary) -> None:
    problem = "the checkpoint's architecture differs from the config"
    allowed = (
        "a checkpoint of the configured architecture, or matching model.* overrides",
        "the data and tokenizer the checkpoint was trained on",
    )
    require_compatible(payload, payload["architecture"], model.config.architecture(), vocab, "resume", problem, allowed)


def make_callbacks(plan: JobPlan, console: Console, runtime: Runtime, sampler: Sampler | None) -> CallbackList:
    """The step reporter and the chosen loggers; eval_only writes its own file and no logger's.
    Throughput counts the tokens of every rank, so MFU is measured against every rank's device."""
    run, run_dir = plan.run, plan.run_dir
    peak_flops = run.system.peak_flops * runtime.dist.world_size
    callbacks = [StepReporter(run.log_interval, runtime.raw_model.estimate_flops_per_token(), peak_flops)]
    loggers = run.logger
    if loggers.console is not None:
        callbacks.append(loggers.console.build(console))
    if not run.eval_only:
        if loggers.jsonl is not None:
            callbacks.append(loggers.jsonl.build(run_dir))
        if loggers.plot is not None:  # after the jsonl logger: it draws what that one wrote
            callbacks.append(loggers.plot.build(run_dir, loggers.jsonl.filename))
        if loggers.wandb is not None:
            callbacks.append(loggers.wandb.build(run_dir, plan.record, sweep_name()))
        if sampler is not None:  # last: the samples follow the evaluation's lines
            callbacks.append(Samples(sampler, run_dir))
    return CallbackList(callbacks, runtime.timer)


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
