"""samples.jsonl: each evaluation's samples, kept in the run folder."""

import contextlib
import math
from pathlib import Path

from trainer.reporting import strict_json
from trainer.reporting.callbacks import Callback, truncate_after
from trainer.sampling.during_training import Sampler

SAMPLES = "samples.jsonl"


class Samples(Callback):
    """Draws samples after each evaluation with a finite validation loss (with their own generators:
    training continues exactly as without them), hands them to every callback (`on_samples`), and
    appends them to samples.jsonl in the run folder, one object per sample with its step. A resumed
    run drops what the interrupted run wrote after its checkpoint."""

    def __init__(self, sampler: Sampler, run_dir: Path):
        self.sampler, self.path = sampler, run_dir / SAMPLES

    def on_eval(self, trainer, record: dict) -> None:
        if math.isfinite(record["val/loss"]):
            ema = trainer.optimization.ema  # the averaged weights write the samples, where there are some
            with ema.applied() if ema is not None else contextlib.nullcontext():
                samples = self.sampler(trainer.runtime.raw_model, trainer.data.validation_set)
            trainer.timer.lap("evaluation")  # drawing them is part of the evaluation, not of logging
            trainer.callbacks.on_samples(trainer, samples)

    def on_train_start(self, trainer) -> None:
        truncate_after(self.path, trainer.state.step if trainer.files.resumed_from is not None else -1)

    def on_samples(self, trainer, samples: list[dict]) -> None:
        with self.path.open("a") as file:
            for record in samples:
                file.write(strict_json.dumps({"step": trainer.state.step, **record}) + "\n")
