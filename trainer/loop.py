"""The training loop. Everything it needs is built by trainer/build.py and handed in."""

import copy
import functools
import json
from contextlib import AbstractContextManager
from dataclasses import replace
from pathlib import Path

import torch

from stability import Action, FaultInjector, StabilityMonitor
from trainer.batches import Stream, generator_for
from trainer.checkpoint import CheckpointDirectory
from trainer.curriculum import Advance, Curriculum
from trainer.distributed import ONE_PROCESS, Distributed
from trainer.loss import ENTROPY_EMA_DECAY, TrainingLoss
from trainer.objectives import Batch, Objective
from trainer.recovery import Recovery
from trainer.reporting.callbacks import CallbackList
from trainer.reporting.timing import PhaseTimer
from trainer.sampling.during_training import Sampler
from trainer.state import TrainState, capture_rng, restore_rng
from trainer.step import Data, StepMetrics, StopRequested, summed_over_ranks, weighted_sum
from trainer.transfer import Transfer
from trainer.vocab import Vocabulary

EVALUATIONS = "evaluations.jsonl"  # what eval_only runs write into the run folder


class Trainer:
    def __init__(
        self,
        *,
        cfg,
        config_record: dict,
        model: torch.nn.Module,
        raw_model: torch.nn.Module,
        objective: Objective,
        data: Data,
        optimizer: torch.optim.Optimizer,
        scaler: torch.amp.GradScaler,
        autocast: AbstractContextManager,
        device: torch.device,
        checkpoints: CheckpointDirectory,
        callbacks: CallbackList,
        vocab: Vocabulary,
        run_dir: Path,
        stability: StabilityMonitor,
        recovery: Recovery,
        faults: FaultInjector,
        transfer: Transfer,
        curriculum: Curriculum | None = None,
        sampler: Sampler | None = None,
        dist: Distributed = ONE_PROCESS,
    ):
        self.config_record = config_record  # the resolved config as plain data, saved in checkpoints
        self.cfg, self.raw_model, self.objective, self.data = cfg, raw_model, objective, data
        # the model as a step calls it: compiled or not, and wrapped by DDP under several processes
        self.dist, self.unwrapped = dist, model
        self.model = dist.wrap(model, device)
        self._wrapped_trainable = self.trainable()
        self.gather = functools.partial(dist.gather_rows, device=device)  # val values of every rank
        self.optimizer, self.scaler, self.autocast, self.device = optimizer, scaler, autocast, device
        self.checkpoints, self.callbacks, self.vocab, self.run_dir = checkpoints, callbacks, vocab, run_dir
        self.stability, self.recovery, self.faults, self.curriculum = stability, recovery, faults, curriculum
        self.transfer, self.sampler = transfer, sampler
        self.state = TrainState()
        self.tokens_per_step = cfg.batch_size * cfg.block_size * cfg.gradient_accumulation_steps
        self.last_checkpoint: Path | None = None
        self.resumed_from: Path | None = None  # the checkpoint this run continues
        self.stop_signal: int | None = None  # set by a pre-emption signal; the loop stops after the step
        self.snapshot: dict | None = None  # the last good state while no checkpoint exists yet
        # the EMA of the loss's entropy multiplier, on the device between checkpoints (in the state in them)
        self.entropy_ema = torch.tensor(self.state.entropy_multiplier_ema, device=device)
        self._evaluated_at: int | None = None
        self.timer = PhaseTimer(device)
        self.last_batches: list[Batch] = []  # the CPU batches of the latest step
        self.last_eval: dict[str, float] = {}  # the metrics of the latest evaluation

    def fit(self) -> None:
        if self.snapshot is None and self.last_checkpoint is None:
            # a rollback before the first checkpoint (a non-finite val loss at step 0) returns here
            self.snapshot = copy.deepcopy(self.checkpoint_payload())
        self.timer.restart()
        self.callbacks.on_train_start(self)
        self.timer.lap("logging")  # the loggers' set-up
        try:
            while True:
                if self.eval_due() and not self.evaluate_and_checkpoint():
                    continue  # the validation loss was not finite: rolled back to the last good state
                if self.stop_agreed():  # pre-emption: after this step's evaluation, as a resume expects
                    self.stop()
                if self.state.step >= self.cfg.max_iters:
                    break
                self.transfer.maybe_unfreeze(self)  # two-stage transfer only
                metrics = self.train_step()
                verdict = self.stability.inspect(metrics.loss, metrics.grad_norm)
                self.timer.lap("stability")
                if verdict.ok:
                    self.optimizer_step(metrics)
                    self.timer.lap("optimizer")
                elif self.recovery.handle(self, verdict) is Action.ROLLBACK:
                    self.timer.lap("stability")
                    continue
                self.state.step += 1
                self.state.tokens_seen += self.tokens_per_step
                self.callbacks.on_step_end(self, metrics)
                self.timer.lap("logging")
        finally:
            self.data.stream.close()
        self.callbacks.on_train_end(self)

    def evaluate_only(self) -> dict[str, float]:
        """eval_only: evaluate the resumed state, report it, and append the metrics to
        evaluations.jsonl in the run folder (the only file written); returns them."""
        metrics = self.evaluate()
        self.callbacks.on_eval(self, metrics)
        record = {
            "checkpoint": str(self.resumed_from),
            "step": self.state.step,
            "stage/index": self.state.stage,
            "eval_iters": self.cfg.eval_iters,
            **metrics,
        }
        if self.dist.is_main:
            path = self.run_dir / EVALUATIONS
            path.parent.mkdir(parents=True, exist_ok=True)
            with path.open("a") as file:
                file.write(json.dumps(record) + "\n")
        return metrics

    def train_step(self) -> StepMetrics:
        """Forward and backward over the micro-batches of one step, then unscale and clip."""
        step = self.state.step
        self.set_learning_rate(self.lr)
        self.stability.begin_step()
        self.faults.poison_params(step, self.raw_model.parameters())
        batches = [
            self.data.stream.get(step, micro_step, self.state.stage, self.state.rollbacks)
            for micro_step in self.data.stream.micro_steps  # this rank's share (global indices)
        ]
        self.last_batches = batches  # the CPU side, for the mask statistics of a log step
        self.timer.lap("data")
        step_loss = self.forward_backward(batches)
        self.faults.poison_grads(step, self.raw_model.parameters())
        self.scaler.unscale_(self.optimizer)
        metrics = StepMetrics(
            loss=step_loss.loss,
            grad_norm=self.clip_gradients(),
            entropy_multiplier=step_loss.multiplier,
            wrong_entropy=step_loss.wrong_entropy,
        )
        self.timer.lap("optimizer")
        return metrics

    def forward_backward(self, batches: list[Batch]) -> TrainingLoss:
        """Accumulate the gradient of the micro-batches; returns the step's loss (device tensors).

        Each micro-batch's mean loss is weighted by its share of the step's targets (counted on the
        CPU, no host sync; under several processes summed over the ranks by a CPU all-reduce), so the
        micro-batches give the loss and gradient of one batch of all their rows, also when the
        number of targets varies (masked positions).
        """
        units = [self.objective.units(batch) for batch in batches]
        total_units = max(1, self.dist.sum_counts(sum(units)))
        penalty = self.cfg.loss.entropy_penalty.strength(self.state.step, self.cfg.max_iters)
        parts = []
        for index, (batch, count) in enumerate(zip(batches, units)):
            share = count / total_units
            batch = self.objective.on_device(batch.to(self.device))
            self.timer.lap("data")
            # DDP all-reduces the gradients in the backward of the last micro-batch only
            with self.dist.gradient_sync(self.model, sync=index == len(batches) - 1):
                with self.autocast:
                    part = self.objective.training_loss(self.model, batch, penalty)
                loss = self.faults.poison_loss(self.state.step, part.loss * share)
                self.timer.lap("forward")
                # Backward per micro-batch: each has its own graph, freed before the next one is built.
                # DDP averages over the ranks, and the shares already add up to one over all of them.
                self.scaler.scale(loss * self.dist.world_size).backward()
            self.timer.lap("backward")
            parts.append((share, replace(part, loss=loss.detach())))
        return summed_over_ranks(weighted_sum(parts), self.dist)

    def clip_gradients(self) -> torch.Tensor:
        """Total gradient norm (a device tensor), clipped to optim.grad_clip unless that is 0."""
        params = [p for p in self.raw_model.parameters() if p.grad is not None]
        if self.cfg.optim.grad_clip > 0:
            return torch.nn.utils.clip_grad_norm_(params, self.cfg.optim.grad_clip)
        return torch.nn.utils.get_total_norm([p.grad for p in params])

    def optimizer_step(self, metrics: StepMetrics) -> None:
        self.scaler.step(self.optimizer)
        self.scaler.update()
        # flush the gradients as soon as we can, no need for this memory anymore
        self.optimizer.zero_grad(set_to_none=True)
        if metrics.entropy_multiplier is not None:  # on the device: no sync
            self.entropy_ema.mul_(ENTROPY_EMA_DECAY).add_(metrics.entropy_multiplier, alpha=1 - ENTROPY_EMA_DECAY)

    @property
    def lr(self) -> float:
        return self.cfg.optim.learning_rate(self.state.step, self.cfg.max_iters) * self.state.lr_scale

    def set_learning_rate(self, lr: float) -> None:
        for group in self.optimizer.param_groups:
            group["lr"] = lr * group.get("lr_multiplier", 1.0)  # an unfrozen trunk's multiplier

    def eval_due(self) -> bool:
        step = self.state.step
        return (step % self.cfg.eval_interval == 0 or step >= self.cfg.max_iters) and step != self._evaluated_at

    def evaluate_and_checkpoint(self) -> bool:
        """Evaluate, then save (always the latest; `best.pt` when val improved).

        Returns False when the validation loss was not finite and the state was rolled back.
        """
        self._evaluated_at = self.state.step
        metrics = self.evaluate()
        metrics["val/loss"] = self.faults.poison_val_loss(self.state.step, metrics["val/loss"])
        verdict = self.stability.inspect_val_loss(metrics["val/loss"])
        self.timer.lap("evaluation")
        if not verdict.ok:
            self.callbacks.on_eval(self, metrics)
            self.recovery.handle(self, verdict)
            self.timer.lap("stability")
            return False
        samples = self.sampler(self.raw_model, self.data.validation_set) if self.sampler is not None else []
        self.timer.lap("evaluation")
        is_best = metrics["val/loss"] < self.state.best_val_loss
        if is_best:
            self.state.best_val_loss, self.state.best_step = metrics["val/loss"], self.state.step
        advance = self.curriculum.after_eval(self.state, metrics["val/loss"]) if self.curriculum else None
        self.last_eval = metrics
        self.callbacks.on_eval(self, metrics)
        if samples:
            self.callbacks.on_samples(self, samples)
        if advance is not None:
            self.announce(advance)
        self.timer.lap("logging")
        self.save_checkpoint(is_best)
        self.timer.lap("checkpoint")
        return True

    def stop_agreed(self) -> bool:
        """Whether this rank or any other received a stop signal (one tiny CPU all-reduce per step
        under DDP), so every rank checkpoints and stops at the same step."""
        agreed = self.dist.first_signal(self.stop_signal)
        if agreed is not None:
            self.stop_signal = agreed
        return agreed is not None

    def request_stop(self, signal_number: int) -> None:
        """Finish the current step, write a checkpoint, then raise StopRequested (signal handlers call this)."""
        self.stop_signal = signal_number

    def stop(self) -> None:
        if self.last_checkpoint != self.checkpoints.path_of(self.state.step):
            self.save_checkpoint(is_best=False)
        raise StopRequested(self.stop_signal, self.state.step, self.last_checkpoint)

    def save_checkpoint(self, is_best: bool) -> None:
        if self.state.step == 0:  # nothing learnt yet: keep the state in memory for an early rollback
            self.snapshot = copy.deepcopy(self.checkpoint_payload())
            return
        if self.dist.is_main:
            self.last_checkpoint = self.checkpoints.save(self.checkpoint_payload(), self.state.step, is_best)
        else:  # rank 0 writes it; a rollback here reads it back
            self.last_checkpoint = self.checkpoints.path_of(self.state.step)
        self.snapshot = None
        self.callbacks.on_checkpoint(self, self.last_checkpoint, is_best)

    def announce(self, advance: Advance) -> None:
        stage = self.curriculum.train[advance.stage]
        self.callbacks.on_event(
            self,
            f"stage {advance.previous} -> {advance.stage} ({stage.describe()}) after "
            f"{advance.stale_count} evaluations without a better val loss",
            {"event": "stage_advance", "stage/index": advance.stage, "stage/stale_count": advance.stale_count},
        )

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        """Train loss on `eval_iters` fresh training batches; every metric on the fixed validation set."""
        self.model.eval()
        with self.autocast:
            train_loss = self.estimate_train_loss()
            # each rank evaluates its share of the validation batches; the values of all are joined
            val = self.objective.evaluate(self.model, self.dist.shard(self.data.validation_set), self.gather)
        self.model.train()
        return {"train/loss": train_loss, **{f"val/{k}": v for k, v in val.items()}}

    def estimate_train_loss(self) -> float:
        """The mean loss of `eval_iters` fresh training batches, each rank computing its share."""
        shares = self.dist.shard(range(self.cfg.eval_iters))
        losses = [self.objective.loss(self.model, self.eval_train_batch(k)).float() for k in shares]
        total = torch.stack(losses).sum() if losses else torch.zeros((), device=self.device)
        return self.dist.sum_(total).item() / self.cfg.eval_iters

    def eval_train_batch(self, k: int) -> Batch:
        generator = generator_for(self.cfg.seed, Stream.EVAL_TRAIN, self.state.step, k)
        batch = self.objective.make_batch(
            self.data.train_windows, self.cfg.batch_size, generator, self.state.stage, self.state.step
        )
        return self.objective.on_device(batch.to(self.device))

    def checkpoint_payload(self) -> dict:
        self.state.entropy_multiplier_ema = self.entropy_ema.item()
        return {
            "format": 1,
            "model": self.raw_model.state_dict(),
            "architecture": self.raw_model.config.architecture(),
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict(),
            "state": self.state.state_dict(),
            "rng": capture_rng(),
            "config": self.config_record,
            "vocab": self.vocab.to_dict(),
            "faults": self.faults.state_dict(),
        }

    def load_payload(self, payload: dict) -> None:
        """Continue from a checkpoint payload (a resume or a rollback)."""
        self.raw_model.load_state_dict(payload["model"])
        # the optimizer's groups must match the saved ones: frozen or unfrozen trunk
        self.optimizer = self.transfer.optimizer_for(self.raw_model, payload["state"].get("unfrozen", False))
        self.optimizer.load_state_dict(payload["optimizer"])
        if payload["scaler"]:  # empty when saved without loss scaling (float32): a float16 resume starts afresh
            self.scaler.load_state_dict(payload["scaler"])
        self.state.load_state_dict(payload["state"])
        self.entropy_ema.fill_(self.state.entropy_multiplier_ema)
        restore_rng(payload["rng"])
        self.optimizer.zero_grad(set_to_none=True)
        # the payload was written right after this step's evaluation
        self._evaluated_at = self.state.step
        self.follow_trainable()

    def trainable(self) -> tuple[bool, ...]:
        return tuple(p.requires_grad for p in self.raw_model.parameters())

    def follow_trainable(self) -> None:
        """DDP reduces the gradients of the parameters that were trainable when it wrapped the model:
        after an unfreeze, or a loaded state with another frozen set, wrap it again."""
        if self.trainable() != self._wrapped_trainable:
            self.model = self.dist.wrap(self.unwrapped, self.device)
            self._wrapped_trainable = self.trainable()
