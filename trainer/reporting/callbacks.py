"""Hooks the loop calls, and the metrics.jsonl logger built on them.

The loop hands over device tensors; only `StepReporter` (trainer/reporting/steps.py) reads them, and only
at log steps, so steps in between run without a host sync.
"""

import json
import os
from dataclasses import dataclass
from pathlib import Path

from trainer.errors import require_plain_name
from trainer.reporting import strict_json


@dataclass
class JsonlLoggerConfig:
    filename: str = "metrics.jsonl"  # a file in the run folder

    def __post_init__(self):
        require_plain_name("logger.jsonl.filename", self.filename)

    def build(self, run_dir: Path) -> "JsonlLogger":
        return JsonlLogger(run_dir / self.filename)


class Callback:
    """Every hook is optional; a subclass overrides the ones it needs. A callback that keeps state
    across a resume (a logger's run id) returns it from `state_dict` under keys of its own."""

    def on_train_start(self, trainer) -> None:
        """Before the first step (also after a resume)."""

    def on_step_end(self, trainer, metrics) -> None:
        """After each optimizer step; `metrics` holds device tensors."""

    def on_log(self, trainer, record: dict) -> None:
        """Every `log_interval` steps, with host-side numbers."""

    def on_eval(self, trainer, record: dict) -> None:
        """After each evaluation."""

    def on_checkpoint(self, trainer, path: Path, is_best: bool) -> None:
        """After a checkpoint was written."""

    def on_samples(self, trainer, samples: list[dict]) -> None:
        """After an evaluation: the model's samples, one record per sample with its "text"."""

    def on_event(self, trainer, message: str, record: dict) -> None:
        """Something the user should know about (a stage change, a recovery): a line and a record."""

    def on_train_end(self, trainer) -> None:
        """After the final evaluation and checkpoint."""

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        """Continue from a checkpoint's state (every key of the run's state; take your own)."""


class CallbackList:
    """The callbacks of a run, called in order; the time they take is charged to the `logging` phase."""

    def __init__(self, callbacks: list[Callback], timer=None):
        self._callbacks, self.timer = list(callbacks), timer

    def add_callback(self, callback: Callback) -> None:
        """Call `callback` after the ones there are."""
        self._callbacks.append(callback)

    def _dispatch(self, hook: str, *args) -> None:
        for callback in self._callbacks:
            getattr(callback, hook)(*args)
        if self.timer is not None:
            self.timer.lap("logging")

    def on_train_start(self, trainer) -> None:
        self._dispatch("on_train_start", trainer)

    def on_step_end(self, trainer, metrics) -> None:
        self._dispatch("on_step_end", trainer, metrics)

    def on_log(self, trainer, record: dict) -> None:
        self._dispatch("on_log", trainer, record)

    def on_eval(self, trainer, record: dict) -> None:
        self._dispatch("on_eval", trainer, record)

    def on_checkpoint(self, trainer, path: Path, is_best: bool) -> None:
        self._dispatch("on_checkpoint", trainer, path, is_best)

    def on_samples(self, trainer, samples: list[dict]) -> None:
        self._dispatch("on_samples", trainer, samples)

    def on_event(self, trainer, message: str, record: dict) -> None:
        self._dispatch("on_event", trainer, message, record)

    def on_train_end(self, trainer) -> None:
        self._dispatch("on_train_end", trainer)

    def state_dict(self) -> dict:
        return {key: value for callback in self._callbacks for key, value in callback.state_dict().items()}

    def load_state_dict(self, state: dict) -> None:
        for callback in self._callbacks:
            callback.load_state_dict(state)


class JsonlLogger(Callback):
    """One JSON object per log or eval line in the run directory."""

    def __init__(self, path: Path):
        self.path = path

    def on_train_start(self, trainer) -> None:
        # up to the checkpoint's step, whose evaluation is not repeated; nothing if no checkpoint is resumed
        truncate_after(self.path, trainer.state.step if trainer.files.resumed_from is not None else -1)

    def on_log(self, trainer, record: dict) -> None:
        self._write(record)

    def on_eval(self, trainer, record: dict) -> None:
        self._write(eval_record(trainer, record))

    def on_event(self, trainer, message: str, record: dict) -> None:
        self._write({"step": trainer.state.step, **record})

    def _write(self, record: dict) -> None:
        with self.path.open("a") as f:
            f.write(strict_json.dumps(record) + "\n")


def eval_record(trainer, metrics: dict) -> dict:
    """An evaluation's line for the loggers: the step, the metrics, the learning rate of the next
    step and where the curriculum stands."""
    state = trainer.state
    return {
        "step": state.step,
        **metrics,
        "lr": trainer.lr,
        "stage/index": trainer.curriculum.stage,
        "stage/stale_count": trainer.curriculum.stale_count,
    }


def truncate_after(path: Path, last: int) -> None:
    """A resumed run continues a JSONL file of the run folder: what the interrupted run wrote after
    step `last`, the checkpoint it resumes from (and a line torn by a kill), is dropped, so no step
    is recorded twice. `last` -1: the file is emptied (a fresh start)."""
    if not path.exists():
        return
    kept = [record for record in _records(path) if record.get("step", 0) <= last]
    staging = path.with_name(f".{path.name}.tmp")
    staging.write_text("".join(strict_json.dumps(record) + "\n" for record in kept))
    os.replace(staging, path)  # atomic: a kill now leaves the old file or the new one


def _records(path: Path) -> list[dict]:
    records = []
    for line in path.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:  # the last line of a run killed while writing it
            continue
    return records
