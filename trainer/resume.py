"""What a resumed run may change: the config stored in the checkpoint against the composed one.

Run length and reporting may change (each change is printed); anything that changes what is being
trained (optimizer, schedule, masking, stages, mode, data, seed) is refused unless the user names
the keys in `resume_changes=[...]`. Raising max_iters keeps the original horizons of the learning
rate decay and of the entropy penalty's ramp, so neither jumps. Which keys are free and which are
horizons is declared on the config fields themselves (trainer/knobs.py).
"""

import copy
from dataclasses import dataclass
from pathlib import Path

from omegaconf import OmegaConf

from trainer.checkpoint import LINEAGE, CheckpointDirectory, find_checkpoint, load_checkpoint, step_in_name
from trainer.config import Config
from trainer.errors import CheckpointError, ConfigError
from trainer.knobs import free_on_resume, horizons


def check_restart(record: dict, run: Config, run_dir: Path) -> None:
    """resume=auto in a folder whose earlier run left no checkpoint (it stopped or diverged before
    its first) starts afresh over that run's files: only with the config that run had (a re-launched
    sweep whose job numbers now mean other values must not overwrite another job's record)."""
    stored = run_dir / ".hydra" / "config.yaml"
    if not stored.is_file():
        return
    _, refused = config_changes(flatten(OmegaConf.to_container(OmegaConf.load(stored))), flatten(record), run)
    if refused:
        raise ConfigError(
            "resume",
            f"{run_dir} holds a run without a checkpoint whose config differs ({refused})",
            "the same values to start it again, or another run_name for a new run",
        )


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
    if run.resume == "auto":
        path = latest_intact(checkpoints)
    else:
        path = find_checkpoint(run.resume, "resume")
        if not run.eval_only:
            check_continues_the_folder(path, run, checkpoints)
    if path is None and run.eval_only:
        raise ConfigError("eval_only", f"{run_dir} holds no checkpoint to evaluate", "resume=PATH of a checkpoint")
    return path


def latest_intact(checkpoints: CheckpointDirectory) -> Path | None:
    """The newest checkpoint of the line that loads: a disk fault or a copy may have damaged the
    newest, and the line goes on from the one before. The newest when none loads (its error names it)."""
    line = [checkpoints.path_of(step) for step in reversed(checkpoints.lineage())]
    line = [path for path in line if path.is_file()]
    return next((path for path in line if _loads(path)), line[0] if line else None)


def skipped_damaged(run: Config, checkpoints: CheckpointDirectory, resumed: Path | None) -> str | None:
    """The line to print when resume=auto passed over a damaged newest checkpoint; None otherwise.
    (Read before the resume branches the line from the checkpoint it continues.)"""
    newest = checkpoints.latest()
    if run.resume != "auto" or resumed is None or newest is None or newest == resumed:
        return None
    return f"resume: {newest} cannot be read; continuing from {resumed.name}, the latest intact checkpoint of the line"


def _loads(path: Path) -> bool:
    try:
        load_checkpoint(path, lazy=True)
    except CheckpointError:
        return False
    return True


def check_continues_the_folder(path: Path, run: Config, checkpoints: CheckpointDirectory) -> None:
    """`resume=PATH` continues the line of training of the run folder it writes into: refuse a
    checkpoint of another folder when this one holds a run already, and a checkpoint of this folder
    that is not on its current line (a branch abandoned by an earlier resume), which would mix runs."""
    run_dir = checkpoints.directory.parent
    if path.resolve().parent != checkpoints.directory.resolve():
        found = earlier_run_artefacts(run, checkpoints)
        if found:
            listed = ", ".join(found[:3]) + (", ..." if len(found) > 3 else "")
            raise ConfigError(
                "resume",
                f"{path} belongs to another run folder, and {run_dir} already holds a run ({listed})",
                "resume=auto to continue this folder's run, or a new run folder (run_name=... or "
                "hydra.run.dir=...) to start from that checkpoint",
            )
        return
    step = step_in_name(path)
    line = checkpoints.lineage()
    if step is not None and step not in line:
        raise ConfigError(
            "resume",
            f"{path.name} is not on the current line of training of {run_dir} (steps {line} in "
            f"checkpoints/{LINEAGE}): an earlier resume abandoned it",
            "a checkpoint of the current line or resume=auto, or a new run folder to start from that checkpoint",
        )


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


@dataclass(frozen=True)
class Reconciliation:
    """What resuming a checkpoint changes in this run: the schedule horizons it keeps (dotted key ->
    step, each null in this run's config) and the lines that say what changed, to print."""

    horizons: dict[str, int]
    lines: list[str]

    def kept_in(self, run: Config, record: dict) -> tuple[Config, dict]:
        """Copies of a run config and its record that keep the horizons (as numbers)."""
        run, record = copy.deepcopy(run), copy.deepcopy(record)
        for dotted, step in self.horizons.items():
            section, _, key = dotted.rpartition(".")
            setattr(_attribute(run, section), key, step)
            _node(record, section)[key] = step
        return run, record


def reconcile(payload: dict, current: dict, run: Config) -> Reconciliation:
    """Check the differences between the config of the checkpoint `payload` and this run's
    (`current`, the record the new checkpoints will store); neither is changed.

    Raises ConfigError listing `key: saved -> now` for changes nobody asked for, and for a
    max_iters below the checkpoint's step.
    """
    step = payload["state"]["step"]
    if step > run.max_iters and not run.eval_only:
        raise ConfigError(
            "max_iters",
            f"{run.max_iters} is below the step of the checkpoint resumed ({step})",
            f"an integer >= {step}, or eval_only=true to evaluate it",
        )
    saved_horizons, kept = schedule_horizons(payload["config"], run)
    before = {**flatten(payload["config"]), **saved_horizons}
    after = {**flatten(current), **kept}
    saved_tokenizer, tokenizer = before.get("tokenizer.name", "char"), after.get("tokenizer.name", "char")
    if saved_tokenizer != tokenizer:  # no resume_changes can make the ids mean other tokens
        raise ConfigError(
            "tokenizer",
            f"{tokenizer}, and the checkpoint's ids are tokens of its own tokenizer, {saved_tokenizer}",
            f"tokenizer={saved_tokenizer} to resume it (transfer=fine_tuning starts a model of the same vocabulary)",
        )
    changed, refused = config_changes(before, after, run)
    if refused:
        raise ConfigError(
            "resume",
            f"the config differs from the checkpoint's ({refused})",
            "the same values, or resume_changes=[KEY, ...]",
        )
    # the user typed resume and eval_only to resume; run_name is the folder's name, a timestamp by default
    shown = [k for k in changed if k not in ("resume", "resume_changes", "eval_only", "run_name")]
    changes = [f"resume: {k} changed {before.get(k)!r} -> {after.get(k)!r}" for k in shown]
    return Reconciliation(kept, changes + horizon_lines(kept, run))


def config_changes(before: dict, after: dict, run: Config) -> tuple[list[str], str]:
    """The keys whose values differ between two flattened configs, and `key: saved -> now` for each
    of them a resume may not change unless `resume_changes` names it ("" when there is none)."""
    changed = sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k) and not _newer(k, before))
    free, asked = free_on_resume(run), tuple(run.resume_changes)
    refused = [k for k in changed if not _matches(k, free) and not _matches(k, asked)]
    return changed, "; ".join(f"{k}: {_short(before.get(k))} -> {_short(after.get(k))}" for k in refused)


def _newer(key: str, before: dict) -> bool:
    """A key the saved config lacks, in a section it has or a new one: the checkpoint predates it (a
    key is added with the default that keeps earlier behaviour). A section that was null is not."""
    if key in before:
        return False
    parts = key.split(".")
    return not any(".".join(parts[:i]) in before for i in range(1, len(parts)))


def schedule_horizons(saved: dict, run: Config) -> tuple[dict[str, int], dict[str, int]]:
    """The horizon of each schedule of the run resumed, as a number (null meant its max_iters), so it
    is compared and saved as one; and those this run keeps (its own is null), so raising max_iters
    does not make the schedule jump."""
    saved_horizons, kept = {}, {}
    for horizon in horizons(run):
        section, _, key = horizon.key.rpartition(".")
        node = _node(saved, section)
        if node is None or (horizon.off_when_zero is not None and not node.get(horizon.off_when_zero)):
            continue  # no such schedule in the run resumed (an older checkpoint, or the schedule off)
        saved_horizons[horizon.key] = node.get(key) or saved["max_iters"]
        if getattr(_attribute(run, section), key) is None:
            kept[horizon.key] = saved_horizons[horizon.key]
    return saved_horizons, kept


def horizon_lines(kept: dict[str, int], run: Config) -> list[str]:
    """A line for each kept horizon that now differs from max_iters."""
    says = {horizon.key: horizon.says for horizon in horizons(run)}
    return [
        f"resume: {says[key].format(step)}, as in the run resumed ({key})"
        for key, step in kept.items()
        if step != run.max_iters
    ]


def _node(tree: dict, dotted: str) -> dict | None:
    for name in dotted.split("."):
        tree = tree.get(name) if isinstance(tree, dict) else None
    return tree


def _attribute(node, dotted: str):
    for name in dotted.split("."):
        node = getattr(node, name)
    return node


def _short(value, limit: int = 80) -> str:
    """A value for a one-line message: long ones (a list of stages) are cut."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _matches(key: str, patterns: tuple[str, ...]) -> bool:
    """Whether `key` is one of `patterns` or lies below one (`system` covers `system.device`)."""
    return any(key == p or key.startswith(f"{p}.") for p in patterns)
