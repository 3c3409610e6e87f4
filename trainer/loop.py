"""The training loop. Everything it needs is built by trainer/build.py and handed in."""

from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from trainer.batches import BatchStream, Stream, TokenWindows, generator_for
from trainer.callbacks import CallbackList
from trainer.checkpoint import CheckpointDirectory
from trainer.curriculum import Advance, Curriculum
from trainer.objectives import Batch, Objective
from trainer.schedule import learning_rate
from trainer.state import TrainState, capture_rng
from trainer.vocab import Vocabulary


@dataclass
class StepMetrics:
    """Device tensors of one optimizer step; read on the host only at log steps."""

    loss: torch.Tensor
    grad_norm: torch.Tensor


class Trainer:
    def __init__(self, *, cfg: DictConfig, model: torch.nn.Module, raw_model: torch.nn.Module,
                 objective: Objective, stream: BatchStream, train_windows: TokenWindows,
                 validation_set: list[Batch], optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler,
                 autocast: AbstractContextManager, device: torch.device, checkpoints: CheckpointDirectory,
                 callbacks: CallbackList, vocab: Vocabulary, run_dir: Path, curriculum: Curriculum | None = None,
                 state: TrainState | None = None):
        self.cfg, self.model, self.raw_model, self.objective = cfg, model, raw_model, objective
        self.stream, self.train_windows, self.validation_set = stream, train_windows, validation_set
        self.optimizer, self.scaler, self.autocast, self.device = optimizer, scaler, autocast, device
        self.checkpoints, self.callbacks, self.vocab, self.run_dir = checkpoints, callbacks, vocab, run_dir
        self.curriculum = curriculum
        self.state = state or TrainState()
        self.tokens_per_step = cfg.batch_size * cfg.block_size * cfg.gradient_accumulation_steps
        self.decay_iters = cfg.optim.lr_decay_iters or cfg.max_iters
        self.last_checkpoint: Path | None = None
        self._evaluated_at: int | None = None

    def fit(self) -> None:
        self.callbacks.on_train_start(self)
        try:
            while self.state.step < self.cfg.max_iters:
                if self.state.step % self.cfg.eval_interval == 0:
                    self.evaluate_and_checkpoint()
                metrics = self.train_step()
                self.optimizer_step()
                self.state.step += 1
                self.state.tokens_seen += self.tokens_per_step
                self.callbacks.on_step_end(self, metrics)
            self.evaluate_and_checkpoint()
        finally:
            self.stream.close()
        self.callbacks.on_train_end(self)

    def train_step(self) -> StepMetrics:
        """Forward and backward over the micro-batches of one step, then unscale and clip."""
        self.set_learning_rate(self.lr)
        accumulation = self.cfg.gradient_accumulation_steps
        total_loss = torch.zeros((), device=self.device)
        for micro_step in range(accumulation):
            batch = self.stream.get(self.state.step, micro_step, self.state.stage).to(self.device)
            with self.autocast:
                loss = self.objective.loss(self.model, batch) / accumulation
            # Backward per micro-batch: each has its own graph, freed before the next one is built.
            self.scaler.scale(loss).backward()
            total_loss += loss.detach()
        self.scaler.unscale_(self.optimizer)
        return StepMetrics(loss=total_loss, grad_norm=self.clip_gradients())

    def clip_gradients(self) -> torch.Tensor:
        """Total gradient norm (a device tensor), clipped to optim.grad_clip unless that is 0."""
        params = [p for p in self.raw_model.parameters() if p.grad is not None]
        if self.cfg.optim.grad_clip > 0:
            return torch.nn.utils.clip_grad_norm_(params, self.cfg.optim.grad_clip)
        return torch.nn.utils.get_total_norm([p.grad for p in params])

    def optimizer_step(self) -> None:
        self.scaler.step(self.optimizer)
        self.scaler.update()
        # flush the gradients as soon as we can, no need for this memory anymore
        self.optimizer.zero_grad(set_to_none=True)

    @property
    def lr(self) -> float:
        optim = self.cfg.optim
        return learning_rate(self.state.step, lr=optim.lr, min_lr=optim.min_lr, warmup_iters=optim.warmup_iters,
                             decay_iters=self.decay_iters, schedule=optim.schedule.value)

    def set_learning_rate(self, lr: float) -> None:
        for group in self.optimizer.param_groups:
            group["lr"] = lr

    def evaluate_and_checkpoint(self) -> None:
        """Evaluate, then save (always the latest; `best.pt` when val improved)."""
        if self._evaluated_at == self.state.step:  # e.g. right after resuming from this step's checkpoint
            return
        self._evaluated_at = self.state.step
        metrics = self.evaluate()
        is_best = metrics["val/loss"] < self.state.best_val_loss
        if is_best:
            self.state.best_val_loss = metrics["val/loss"]
        advance = self.curriculum.after_eval(self.state, metrics["val/loss"]) if self.curriculum else None
        self.callbacks.on_eval(self, metrics)
        if advance is not None:
            self.announce(advance)
        if self.state.step > 0 or self.cfg.max_iters == 0:
            self.last_checkpoint = self.checkpoints.save(self.checkpoint_payload(), self.state.step, is_best)
            self.callbacks.on_checkpoint(self, self.last_checkpoint, is_best)

    def announce(self, advance: Advance) -> None:
        stage = self.curriculum.train[advance.stage]
        self.callbacks.on_event(
            self, f"stage {advance.previous} -> {advance.stage} ({stage.describe()}) after "
                  f"{advance.stale_count} evaluations without a better val loss",
            {"event": "stage_advance", "stage/index": advance.stage, "stage/stale_count": advance.stale_count})

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        """Train loss on `eval_iters` fresh training batches; every metric on the fixed validation set."""
        self.model.eval()
        with self.autocast:
            train_batches = [self.eval_train_batch(k) for k in range(self.cfg.eval_iters)]
            train_loss = torch.stack([self.objective.loss(self.model, b) for b in train_batches]).mean().item()
            val = self.objective.evaluate(self.model, self.validation_set)
        self.model.train()
        return {"train/loss": train_loss, **{f"val/{k}": v for k, v in val.items()}}

    def eval_train_batch(self, k: int) -> Batch:
        generator = generator_for(self.cfg.seed, Stream.EVAL_TRAIN, self.state.step, k)
        batch = self.objective.make_batch(self.train_windows, self.cfg.batch_size, generator, self.state.stage)
        return batch.to(self.device)

    def mark_resumed(self) -> None:
        """The checkpoint being resumed was written right after this step's evaluation."""
        self._evaluated_at = self.state.step

    def checkpoint_payload(self) -> dict:
        return {
            "format": 1,
            "model": self.raw_model.state_dict(),
            "architecture": self.raw_model.config.architecture(),
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict(),
            "state": self.state.state_dict(),
            "rng": capture_rng(),
            "config": OmegaConf.to_container(self.cfg, resolve=True, enum_to_str=True),
            "vocab": self.vocab.to_dict(),
        }
