"""What is drawn of a run, read from its metrics.jsonl: the train and val loss, the val loss of each
validation stage, the learning rate, and the steps of its events (stage changes, unfreezing,
stability actions)."""

import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from trainer.reporting.callbacks import JsonlLoggerConfig

METRICS = JsonlLoggerConfig.filename  # where the JSONL logger writes, unless configured otherwise
OVERRIDES = Path(".hydra") / "overrides.yaml"
STAGE_LOSS_KEY = re.compile(r"^val/stage_(\d+)_loss$")
# the event kinds drawn, in the legend's order; stability actions map to the first three
EVENT_KINDS = ("stage change", "unfreeze", "skipped step", "rollback", "abort")
STABILITY_ACTIONS = {"skip": "skipped step", "rollback": "rollback", "abort": "abort"}


@dataclass
class Series:
    """One curve: `steps` ascending, `values` the same length (NaN where a value was not finite)."""

    steps: list[int] = field(default_factory=list)
    values: list[float] = field(default_factory=list)


@dataclass
class RunCurves:
    """What is drawn of one run."""

    label: str
    train_loss: Series
    val_loss: Series
    stage_losses: dict[int, Series]  # validation stage index -> its val loss
    lr: Series
    events: dict[str, list[int]]  # event kind (one of EVENT_KINDS) -> the steps where it happened


def read_records(path: Path) -> list[dict]:
    """The JSON objects of a JSONL file, in file order; a line that is not one (torn by a kill) is skipped."""
    records = []
    for line in path.read_text(errors="replace").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict) and isinstance(record.get("step"), int):
            records.append({key: math.nan if value is None else value for key, value in record.items()})  # null: NaN
    return records


def is_event(record: dict) -> bool:
    return "event" in record or "stability/event" in record


def is_eval(record: dict) -> bool:
    return "val/loss" in record and not is_event(record)


def is_log(record: dict) -> bool:
    return "train/loss" in record and not is_eval(record) and not is_event(record)


def series(records: list[dict], key: str) -> Series:
    """`key` against the step. A step recorded twice (re-run after a rollback) keeps its last value:
    the curve follows the line of training that continued."""
    by_step = {}
    for record in records:
        value = record.get(key)
        if isinstance(value, (int, float)):
            by_step[record["step"]] = float(value) if math.isfinite(value) else math.nan
    steps = sorted(by_step)
    return Series(steps, [by_step[step] for step in steps])


def event_kind(record: dict) -> str | None:
    """The EVENT_KINDS kind of an event record, or None for one that is not drawn."""
    if record.get("event") == "stage_advance":
        return "stage change"
    if record.get("event") == "unfreeze":
        return "unfreeze"
    # the rollback itself is marked where it was decided; "rollback_done" only says where it landed
    if "stability/event" in record and record["stability/event"] != "rollback_done":
        return STABILITY_ACTIONS.get(record.get("action"))
    return None


def events_by_kind(records: list[dict]) -> dict[str, list[int]]:
    events = {}
    for record in records:
        kind = event_kind(record)
        if kind is not None:
            events.setdefault(kind, []).append(record["step"])
    return events


def stage_losses(evals: list[dict]) -> dict[int, Series]:
    stages = {int(m[1]) for record in evals for key in record if (m := STAGE_LOSS_KEY.match(key))}
    return {stage: series(evals, f"val/stage_{stage}_loss") for stage in sorted(stages)}


def learning_rate(logs: list[dict], evals: list[dict]) -> Series:
    """From the log records (the rate the step used), else from the eval records (the rate of the next step):
    not mixed, as the two differ by one step of the schedule."""
    from_logs = series(logs, "lr")
    return from_logs if from_logs.steps else series(evals, "lr")


def curves_of(records: list[dict], label: str) -> RunCurves:
    logs = [r for r in records if is_log(r)]
    evals = [r for r in records if is_eval(r)]
    return RunCurves(
        label=label,
        train_loss=series(logs, "train/loss"),
        val_loss=series(evals, "val/loss"),
        stage_losses=stage_losses(evals),
        lr=learning_rate(logs, evals),
        events=events_by_kind(records),
    )


def run_overrides(run_dir: Path) -> list[str]:
    """The command-line overrides of a run (`.hydra/overrides.yaml`), or [] when they cannot be read."""
    path = run_dir / OVERRIDES
    if not path.is_file():
        return []
    import yaml  # only here: the command and the callback need it, importing this module does not

    try:
        overrides = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError):
        return []  # the label is a convenience: a damaged file must not stop the drawing
    return [str(item) for item in overrides] if isinstance(overrides, list) else []


def run_labels(run_dirs: Sequence[Path]) -> list[str]:
    """Folder name (with its parent's when two runs share a name, e.g. jobs of two sweeps) and overrides."""
    names = [run_dir.name for run_dir in run_dirs]
    if len(set(names)) < len(names):
        names = [f"{run_dir.parent.name}/{run_dir.name}" for run_dir in run_dirs]
    labels = []
    for name, run_dir in zip(names, run_dirs):
        overrides = run_overrides(run_dir)
        labels.append(f"{name}: {' '.join(overrides)}" if overrides else name)
    return labels


def load_runs(run_dirs: Sequence[Path], metrics_filename: str = METRICS) -> list[RunCurves]:
    run_dirs = [Path(run_dir).resolve() for run_dir in run_dirs]
    labels = run_labels(run_dirs)
    return [curves_of(read_records(d / metrics_filename), label) for d, label in zip(run_dirs, labels)]


def sweep_jobs(folder: Path) -> list[Path]:
    """The subfolders of `folder` that are run folders, in numeric order (2 before 10), then by name."""
    jobs = [child for child in folder.iterdir() if child.is_dir() and (child / METRICS).is_file()]
    return sorted(jobs, key=lambda job: (0, int(job.name), "") if job.name.isdigit() else (1, 0, job.name))
