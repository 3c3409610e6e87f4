"""The training loop. Its parts are built by trainer/build.py and handed in; they decide, the loop
applies their decisions here, in one place (DESIGN "The Trainer")."""

from dataclasses import replace

from stability import TrainingDiverged
from trainer.curriculum import Advance, Curriculum
from trainer.evaluation import evaluate
from trainer.guard import GOOD, Decision, Guard, StepHooks, Verdict
from trainer.objectives import Batch, Objective
from trainer.optimization import Optimization
from trainer.reporting import strict_json
from trainer.reporting.callbacks import CallbackList
from trainer.run_files import RunFiles
from trainer.runtime import Runtime
from trainer.state import TrainState, capture_rng, restore_rng
from trainer.step import Data, StepMetrics, StopRequested, summed_over_ranks, weighted_sum
from trainer.transfer import parameter_summary


class Trainer:
    def __init__(
        self,
        cfg,
        runtime: Runtime,
        objective: Objective,
        data: Data,
        optimization: Optimization,
        guard: Guard,
        curriculum: Curriculum,
        files: RunFiles,
        callbacks: CallbackList,
    ):
        """`cfg`: the validated run config (trainer/config.py Config)."""
        self.cfg, self.runtime, self.objective, self.data = cfg, runtime, objective, data
        self.optimization, self.guard, self.curriculum, self.files = optimization, guard, curriculum, files
        self.callbacks, self.timer = callbacks, runtime.timer
        self.state = TrainState()  # the run's progress
        self.hooks = StepHooks()  # the guard's checks and faults enter here
        guard.install(runtime.raw_model, self.hooks, lambda: self.state.step)
        self.tokens_per_step = cfg.batch_size * cfg.block_size * cfg.gradient_accumulation_steps
        self.stop_signal: int | None = None  # set by a pre-emption signal; the loop stops after the step
        self._evaluated_at: int | None = None
        self.last_batches: list[Batch] = []  # the CPU batches of the latest step, for the log step
        self.last_eval: dict[str, float] = {}  # the metrics of the latest evaluation

    def resume(self, path, payload: dict) -> None:
        """Continue the checkpoint `payload` read from `path`: every part, the guard too."""
        self.load_payload(payload)
        self.guard.load_state_dict(payload["state"])
        self.guard.faults.load_state_dict(payload.get("faults", []))
        self.files.resumed(path, payload)

    def evaluate_only(self) -> dict[str, float]:
        """eval_only: evaluate the resumed state, report it, and append the metrics to
        evaluations.jsonl in the run folder (the only file written); returns them."""
        metrics = self.evaluate()
        self.callbacks.on_eval(self, metrics)
        record = {"checkpoint": str(self.files.resumed_from), "step": self.state.step}
        record |= {"stage/index": self.curriculum.stage, "eval_iters": self.cfg.eval_iters, **metrics}
        self.files.append_evaluation(strict_json.dumps(record))
        return metrics

    def fit(self) -> None:
        self.files.keep_in_memory(self.checkpoint_payload)  # a rollback at the first evaluation returns here
        self.timer.restart()
        self.callbacks.on_train_start(self)
        try:
            while True:
                if self.eval_due():
                    self.apply(self.evaluate_and_checkpoint())  # a bad val loss rolls back
                if self.stop_agreed():  # pre-emption: after this step's evaluation, as a resume expects
                    self.stop()
                if self.state.step >= self.cfg.max_iters:
                    break
                if self.optimization.unfreeze_due(self.state.step):  # transfer=two_stage
                    self.unfreeze()
                metrics = self.train_step()
                self.apply(self.guard.judge(self.state.step, metrics.loss, metrics.grad_norm), metrics)
        finally:
            self.data.stream.close()
        self.callbacks.on_train_end(self)

    def train_step(self) -> StepMetrics:
        """Forward and backward over the micro-batches of one step, then unscale and clip.

        Each micro-batch's mean loss is weighted by its share of the step's targets (counted on the
        CPU, no host sync; under several processes summed over the ranks by a CPU all-reduce), so the
        micro-batches give the loss and gradient of one batch of all their rows, also when the
        number of targets varies (masked positions).
        """
        step, dist = self.state.step, self.runtime.dist
        self.optimization.set_lr(self.lr)
        self.hooks.run("step_start", step)
        self.last_batches = self.data.step_batches(step, self.curriculum.stage, self.guard.rollbacks)
        units = [self.objective.units(batch) for batch in self.last_batches]
        total_units = max(1, dist.sum_counts(sum(units)))
        parts = []
        for index, (batch, count) in enumerate(zip(self.last_batches, units)):
            batch = self.objective.on_device(batch.to(self.runtime.device))
            self.timer.lap("data")
            with self.runtime.gradient_sync(last=index == len(units) - 1):
                with self.runtime.autocast:
                    part = self.objective.training_loss(self.runtime.model, batch, self.penalty)
                loss = self.hooks.run("loss", step, part.loss * count / total_units)
                self.timer.lap("forward")
                # Backward per micro-batch: each has its own graph, freed before the next one is built.
                # DDP averages over the ranks, and the shares already add up to one over all of them.
                self.optimization.backward(loss * dist.world_size)
            self.timer.lap("backward")
            parts.append((count / total_units, replace(part, loss=loss.detach())))
        step_loss = summed_over_ranks(weighted_sum(parts), dist)
        self.hooks.run("gradients", step)
        grad_norm = self.optimization.unscale_and_clip()
        return StepMetrics(step_loss.loss, grad_norm, step_loss.multiplier, step_loss.wrong_entropy)

    def apply(self, verdict: Verdict, metrics: StepMetrics | None = None) -> None:
        """Carry out the guard's verdict on a step (with its `metrics`) or on an evaluation (without)."""
        if verdict.failed:
            self.report(verdict)
        if verdict.decision is Decision.STOP:
            raise TrainingDiverged(self.guard.give_up_reason(self.state.step, verdict, self.files.checkpoints.latest()))
        if verdict.decision is Decision.ROLLBACK:
            self.rollback()
            return
        if verdict.decision is Decision.STEP and metrics is not None:
            self.optimization.step()
            self.objective.applied(metrics)
        elif verdict.decision is Decision.SKIP:
            self.optimization.skip()
        if metrics is not None:  # the step is done, applied or skipped
            self.state.step += 1
            self.state.tokens_seen += self.tokens_per_step
            self.callbacks.on_step_end(self, metrics)

    @property
    def lr(self) -> float:
        """The learning rate of the current step: the schedule's, times the guard's backoffs."""
        return self.optimization.schedule(self.state.step) * self.guard.lr_scale

    @property
    def penalty(self) -> float:
        """The entropy penalty's strength pi at the current step (0 when it is off)."""
        return self.cfg.loss.entropy_penalty.strength(self.state.step, self.cfg.max_iters)

    def eval_due(self) -> bool:
        step = self.state.step
        return (step % self.cfg.eval_interval == 0 or step >= self.cfg.max_iters) and step != self._evaluated_at

    def evaluate_and_checkpoint(self) -> Verdict:
        """Evaluate, then save (always the latest; `best.pt` when val improved); the guard's verdict
        on the validation loss (a roll-back when it is not finite, and nothing saved)."""
        self._evaluated_at = self.state.step
        metrics = self.evaluate()
        metrics["val/loss"] = self.hooks.run("val_loss", self.state.step, metrics["val/loss"])
        self.timer.lap("evaluation")
        verdict = self.guard.judge_val_loss(self.state.step, metrics["val/loss"])
        if verdict.failed:
            self.callbacks.on_eval(self, metrics)
            return verdict
        is_best = metrics["val/loss"] < self.state.best_val_loss
        if is_best:
            self.state.best_val_loss, self.state.best_step = metrics["val/loss"], self.state.step
        advance = self.curriculum.after_eval(metrics["val/loss"])
        self.last_eval = metrics
        self.callbacks.on_eval(self, metrics)
        if advance is not None:
            self.announce(advance)
        self.save_checkpoint(is_best)
        return GOOD

    def stop_agreed(self) -> bool:
        """Whether this rank or any other received a stop signal (one tiny CPU all-reduce per step
        under DDP), so every rank checkpoints and stops at the same step."""
        agreed = self.runtime.dist.first_signal(self.stop_signal)
        if agreed is not None:
            self.stop_signal = agreed
        return agreed is not None

    def request_stop(self, signal_number: int) -> None:
        """Finish the current step, write a checkpoint, then raise StopRequested (signal handlers call this)."""
        self.stop_signal = signal_number

    def stop(self) -> None:
        if not self.files.saved_at(self.state.step):
            self.save_checkpoint(is_best=False)
        raise StopRequested(self.stop_signal, self.state.step, self.files.last_checkpoint)

    def save_checkpoint(self, is_best: bool) -> None:
        path = self.files.save(self.checkpoint_payload, self.state.step, is_best)
        if path is not None:
            self.callbacks.on_checkpoint(self, path, is_best)

    def report(self, verdict: Verdict) -> None:
        action = verdict.decision.value if verdict.decision is not Decision.STOP else "abort"
        self.callbacks.on_event(
            self,
            f"instability at step {self.state.step}: {verdict.checks} not finite -> {action}",
            {
                "stability/event": f"{verdict.checks}: {action}",
                "check": verdict.checks,
                "action": action,
                "lr": self.lr,
            },
        )

    def rollback(self) -> None:
        """Back to the last good state of this run, with a lower learning rate and fresh batches."""
        payload, source = self.files.last_good()
        self.load_payload(payload)
        self.guard.rolled_back()  # its counters outlive the rollback: they keep the policy bounded
        self.callbacks.on_event(
            self,
            f"rolled back to {source} (step {self.state.step}), learning rate now x{self.guard.lr_scale:g}",
            {
                "stability/event": "rollback_done",
                "action": "rollback",
                "lr": self.lr,
                "stability/rollbacks": self.guard.rollbacks,
            },
        )

    def unfreeze(self) -> None:
        self.optimization.unfreeze()
        self.runtime.follow_trainable()  # DDP: the trunk's gradients join the all-reduce
        multiplier = self.cfg.transfer.unfreeze_lr_multiplier
        self.callbacks.on_event(
            self,
            f"unfroze the trunk at step {self.state.step}: its LR is the scheduled LR x {multiplier:g}; "
            f"{parameter_summary(self.runtime.raw_model)}",
            {"event": "unfreeze", "lr": self.lr, "lr_multiplier": multiplier},
        )

    def announce(self, advance: Advance) -> None:
        stage = self.curriculum.train[advance.stage]
        self.callbacks.on_event(
            self,
            f"stage {advance.previous} -> {advance.stage} ({stage.describe()}) after "
            f"{advance.stale_count} evaluations without a better val loss",
            {"event": "stage_advance", "stage/index": advance.stage, "stage/stale_count": advance.stale_count},
        )

    def evaluate(self) -> dict[str, float]:
        args = (self.runtime, self.objective, self.data, self.cfg, self.state.step, self.curriculum.stage)
        return evaluate(*args, self.optimization.ema)

    def checkpoint_payload(self) -> dict:
        """The checkpoint, composed from the parts (format 1: the parts' small states side by side
        in `state`, so checkpoints of earlier versions load unchanged)."""
        raw_model = self.runtime.raw_model
        state = {
            **self.state.state_dict(),
            **self.curriculum.state_dict(),
            **self.guard.state_dict(),
            "unfrozen": self.optimization.unfrozen,
            **self.objective.state_dict(),
            **self.callbacks.state_dict(),
        }
        return {
            "format": 1,
            "model": raw_model.state_dict(),
            "architecture": raw_model.config.architecture(),
            **self.optimization.state_dict(),
            "state": state,
            "rng": capture_rng(),
            "config": self.files.record,
            "vocab": self.files.vocab.to_dict(),
            "faults": self.guard.faults.state_dict(),
        }

    def load_payload(self, payload: dict) -> None:
        """Continue from a checkpoint payload (a resume or a rollback): every part but the guard."""
        self.runtime.raw_model.load_state_dict(payload["model"])
        self.optimization.load_state_dict(payload)
        for part in (self.state, self.curriculum, self.objective, self.callbacks):
            part.load_state_dict(payload["state"])
        restore_rng(payload["rng"])
        self._evaluated_at = self.state.step  # the payload was written right after this step's evaluation
        self.runtime.follow_trainable()
