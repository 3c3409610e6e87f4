"""samples.jsonl: each evaluation's samples, kept in the run folder."""

import json
from pathlib import Path

from trainer.reporting.callbacks import Callback, truncate_after

SAMPLES = "samples.jsonl"


class SampleLog(Callback):
    """Appends each evaluation's samples to samples.jsonl in the run folder, one object per sample
    with its step. A resumed run drops what the interrupted run wrote after its checkpoint."""

    def __init__(self, run_dir: Path):
        self.path = run_dir / SAMPLES

    def on_train_start(self, trainer) -> None:
        truncate_after(self.path, trainer.state.step if trainer.resumed_from is not None else -1)

    def on_samples(self, trainer, samples: list[dict]) -> None:
        with self.path.open("a") as file:
            for record in samples:
                file.write(json.dumps({"step": trainer.state.step, **record}) + "\n")
