"""The log step: the step's device metrics, throughput, the timing breakdown and the mask
statistics become one host-side record every `log_interval` steps, handed to the loggers.

Steps in between cost nothing here: the record is built only at log steps, with one host sync.
"""

import time

import torch

from models import estimate_mfu
from trainer.objectives import Batch
from trainer.reporting.callbacks import Callback


class StepReporter(Callback):
    def __init__(self, log_interval: int, flops_per_token: float, peak_flops: float):
        self.log_interval, self.flops_per_token, self.peak_flops = log_interval, flops_per_token, peak_flops

    def on_train_start(self, trainer) -> None:
        self._mark(trainer.state.step)
        self._interval_start = time.perf_counter()

    def on_eval(self, trainer, record: dict) -> None:
        # evaluation time is not training throughput
        self._mark(trainer.state.step)

    def on_checkpoint(self, trainer, path, is_best: bool) -> None:
        self._mark(trainer.state.step)  # nor is writing a checkpoint

    def on_step_end(self, trainer, metrics) -> None:
        step = trainer.state.step
        if step % self.log_interval and step != trainer.cfg.max_iters:
            return
        # The one host sync of a log step: loss, gradient norm (and the entropy penalty's state) together.
        values = [metrics.loss, metrics.grad_norm]
        if metrics.entropy_multiplier is not None:
            values += [trainer.objective.classification_loss.ema.value, metrics.wrong_entropy]
        loss, grad_norm, *entropy = torch.stack([v.float() for v in values]).tolist()
        seconds = (time.perf_counter() - self._since) / max(1, step - self._since_step)
        tokens_per_second = trainer.tokens_per_step / seconds
        record = {
            "step": step,
            "train/loss": loss,
            "lr": trainer.optimization.optimizer.param_groups[0]["lr"],
            "grad_norm": grad_norm,
            "ms_per_step": 1000 * seconds,
            "tokens_per_second": tokens_per_second,
            "mfu": estimate_mfu(self.flops_per_token, tokens_per_second, self.peak_flops),
        }
        if entropy:
            record["loss/entropy_multiplier"], record["loss/wrong_entropy"] = entropy
        record.update(self._timing(trainer))
        if trainer.curriculum.staged:
            record.update(mask_statistics(trainer.last_batches, len(trainer.curriculum.train)))
        trainer.callbacks.on_log(trainer, record)
        self._mark(step)

    def _timing(self, trainer) -> dict[str, float]:
        """Milliseconds per phase since the last log step (`time/<phase>_ms`), and the wall time of
        that interval measured on its own clock (`time/interval_ms`), which the phases add up to."""
        trainer.timer.lap("logging")
        spent = trainer.timer.read()
        now = time.perf_counter()
        record = {f"time/{phase}_ms": ms for phase, ms in spent.items()}
        record["time/interval_ms"] = 1000 * (now - self._interval_start)
        self._interval_start = now
        return record

    def _mark(self, step: int) -> None:
        self._since, self._since_step = time.perf_counter(), step


def mask_statistics(batches: list[Batch], stages: int) -> dict[str, float]:
    """The achieved mask ratio (mean, min, max over rows) and the rows of each curriculum stage in a
    step's batches, read from their CPU side (no device sync)."""
    if not batches or batches[0].mask is None or batches[0].row_stage is None:
        return {}
    ratios = torch.cat([batch.mask.float().mean(1) for batch in batches])
    rows = torch.bincount(torch.cat([batch.row_stage for batch in batches]), minlength=stages)
    record = {
        "mask/ratio_mean": ratios.mean().item(),
        "mask/ratio_min": ratios.min().item(),
        "mask/ratio_max": ratios.max().item(),
    }
    record.update({f"mask/stage_{index}_rows": count for index, count in enumerate(rows.tolist())})
    return record
