"""What a resumed run may change: the config stored in the checkpoint against the composed one.

Run length and reporting may change (each change is printed); anything that changes what is being
trained (optimizer, schedule, masking, stages, mode, data, seed) is refused unless the user names
the keys in `resume_changes=[...]`. Raising max_iters keeps the original decay horizon, so the
learning rate does not jump.
"""

import copy
from pathlib import Path

from trainer.checkpoint import CheckpointDirectory, find_checkpoint, load_checkpoint
from trainer.config import Config
from trainer.errors import ConfigError

# Keys (and the keys below them) that a resumed run may change without asking.
FREE_TO_CHANGE = (
    "max_iters",
    "eval_interval",
    "eval_iters",
    "log_interval",
    "resume",
    "resume_changes",
    "eval_only",
    "run_name",
    "checkpoint",
    "logger",
    "system",
    "data.cache_dir",
    "data.prefetch",
)


def check_resume(run: Config, record: dict, run_dir: Path) -> None:
    """Refuse now what building the run in `run_dir` would refuse about resuming: a fresh run into
    a used folder, eval_only without a checkpoint, a checkpoint that cannot be read, a changed
    config. Reads only the checkpoint's stored config (the file is mapped, not loaded)."""
    run = copy.deepcopy(run)
    path = resume_point(run, run.checkpoint.build(run_dir))
    if path is not None:
        reconcile(load_checkpoint(path, lazy=True)["config"], copy.deepcopy(record), run)


def resume_point(run: Config, checkpoints: CheckpointDirectory) -> Path | None:
    """The checkpoint file this run continues (or, with eval_only, evaluates); None for a fresh start.

    Raises ConfigError for a fresh run into a folder an earlier run used, and for eval_only without
    a checkpoint.
    """
    run_dir = checkpoints.directory.parent
    if run.resume == "none":
        found = earlier_run_artefacts(run, checkpoints)
        if found:
            raise ConfigError(
                "resume",
                f"{run_dir} already holds a run ({', '.join(found)})",
                "resume=auto to continue it, or another run_name for a new run",
            )
        return None
    path = checkpoints.latest() if run.resume == "auto" else find_checkpoint(run.resume, "resume")
    if path is None and run.eval_only:
        raise ConfigError("eval_only", f"{run_dir} holds no checkpoint to evaluate", "resume=PATH of a checkpoint")
    return path


def earlier_run_artefacts(run: Config, checkpoints: CheckpointDirectory) -> list[str]:
    """What an earlier run left in the run folder (checkpoints, metrics, saved config), as paths
    relative to it."""
    run_dir = checkpoints.directory.parent
    names = {".hydra/config.yaml", "metrics.jsonl", "summary.json"}
    if run.logger.jsonl is not None:
        names.add(run.logger.jsonl.filename)
    if run.logger.plot is not None:
        names.add(run.logger.plot.filename)
    files = [run_dir / name for name in sorted(names)]
    if checkpoints.directory.is_dir():
        files += sorted(checkpoints.directory.iterdir())
    return [str(f.relative_to(run_dir)) for f in files if f.is_file()]


def flatten(tree, prefix: str = "") -> dict:
    """{"a.b": value} for every leaf of nested dicts; lists are leaves."""
    if not isinstance(tree, dict):
        return {prefix: tree}
    flat = {}
    for key, value in tree.items():
        flat.update(flatten(value, f"{prefix}.{key}" if prefix else str(key)))
    return flat


def reconcile(saved: dict, current: dict, run: Config) -> list[str]:
    """Check the differences between the checkpoint's config and this run's (`current`, the record
    the new checkpoints will store); return the lines that say what changed.

    Raises ConfigError listing `key: saved -> now` for changes nobody asked for.
    """
    saved = copy.deepcopy(saved)
    lines = keep_decay_horizon(saved, current, run)
    before, after = flatten(saved), flatten(current)
    changed = sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))
    asked = tuple(run.resume_changes)
    refused = [k for k in changed if not _matches(k, FREE_TO_CHANGE) and not _matches(k, asked)]
    if refused:
        listed = "; ".join(f"{k}: {before.get(k)!r} -> {after.get(k)!r}" for k in refused)
        raise ConfigError(
            "resume",
            f"the config differs from the checkpoint's ({listed})",
            "the same values, or resume_changes=[KEY, ...]",
        )
    shown = [k for k in changed if k not in ("resume", "eval_only")]  # the user typed these two to resume
    changes = [f"resume: {k} changed {before.get(k)!r} -> {after.get(k)!r}" for k in shown]
    return changes + lines


def keep_decay_horizon(saved: dict, current: dict, run: Config) -> list[str]:
    """`optim.lr_decay_iters: null` means "until max_iters" of the run that started the schedule: a
    resume that raises max_iters keeps that horizon instead of making the learning rate jump. Both
    configs (and the run) get the horizon written out, so it is compared and saved as a number."""
    horizon = saved["optim"]["lr_decay_iters"] = saved["optim"]["lr_decay_iters"] or saved["max_iters"]
    if run.optim.lr_decay_iters is not None:
        return []
    run.optim.lr_decay_iters = current["optim"]["lr_decay_iters"] = horizon
    if horizon == run.max_iters:
        return []
    return [f"resume: the learning rate decays until step {horizon}, as in the run resumed (optim.lr_decay_iters)"]


def _matches(key: str, patterns: tuple[str, ...]) -> bool:
    """Whether `key` is one of `patterns` or lies below one (`system` covers `system.device`)."""
    return any(key == p or key.startswith(f"{p}.") for p in patterns)
