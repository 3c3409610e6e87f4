"""What a resumed run may change: the config stored in the checkpoint against the composed one.

Run length and reporting may change (each change is printed); anything that changes what is being
trained (optimizer, schedule, masking, stages, mode, data, seed) is refused unless the user names
the keys in `resume_changes=[...]`. Raising max_iters keeps the original horizons of the learning
rate decay and of the entropy penalty's ramp, so neither jumps.
"""

import copy
import json
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from trainer.checkpoint import LINEAGE, CheckpointDirectory, find_checkpoint, load_checkpoint, step_in_name
from trainer.config import Config
from trainer.contract import check
from trainer.errors import ConfigError
from trainer.reporting.summary import SUMMARY

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
    "sample",
    "mode.bound_draws",
)


def check_resume(run: Config, record: dict, run_dir: Path) -> None:
    """Refuse now what building the run in `run_dir` would refuse about resuming: a fresh run into
    a used folder, eval_only without a checkpoint, a checkpoint that cannot be read, a changed
    config. Reads only the checkpoint's stored config (the file is mapped, not loaded)."""
    run = copy.deepcopy(run)
    path = resume_point(run, run.checkpoint.build(run_dir))
    if path is not None:
        reconcile(load_checkpoint(path, lazy=True), copy.deepcopy(record), run)
    elif run.resume == "auto":
        check_restart(record, run, run_dir)


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


def finished_run(cfg: DictConfig, run_dir: Path) -> dict | None:
    """The summary of the run in `run_dir` when resume=auto finds it finished: summary.json says
    done at max_iters, and the latest checkpoint is at max_iters with this config (what may change on
    a resume aside). None when there is something to train or evaluate. Reads the summary and the
    checkpoint's stored config only; raises ConfigError for a config the checkpoint's refuses."""
    run = check(cfg)
    summary_file = run_dir / SUMMARY
    if run.resume != "auto" or run.eval_only or not summary_file.is_file():
        return None
    summary = json.loads(summary_file.read_text())
    path = run.checkpoint.build(run_dir).latest()
    if summary.get("status") != "done" or summary.get("step") != run.max_iters or path is None:
        return None
    payload = load_checkpoint(path, lazy=True)
    if payload["state"]["step"] != run.max_iters:
        return None
    reconcile(payload, OmegaConf.to_container(cfg, resolve=True, enum_to_str=True), run)
    return summary


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
        path = checkpoints.latest()
    else:
        path = find_checkpoint(run.resume, "resume")
        if not run.eval_only:
            check_continues_the_folder(path, run, checkpoints)
    if path is None and run.eval_only:
        raise ConfigError("eval_only", f"{run_dir} holds no checkpoint to evaluate", "resume=PATH of a checkpoint")
    return path


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


def reconcile(payload: dict, current: dict, run: Config) -> list[str]:
    """Check the differences between the config of the checkpoint `payload` and this run's
    (`current`, the record the new checkpoints will store); return the lines that say what changed.

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
    saved = copy.deepcopy(payload["config"])
    lines = keep_horizons(saved, current, run)
    before, after = flatten(saved), flatten(current)
    changed, refused = config_changes(before, after, run)
    if refused:
        raise ConfigError(
            "resume",
            f"the config differs from the checkpoint's ({refused})",
            "the same values, or resume_changes=[KEY, ...]",
        )
    # the user typed resume and eval_only to resume; run_name is the folder's name, a timestamp by default
    shown = [k for k in changed if k not in ("resume", "eval_only", "run_name")]
    changes = [f"resume: {k} changed {before.get(k)!r} -> {after.get(k)!r}" for k in shown]
    return changes + lines


def config_changes(before: dict, after: dict, run: Config) -> tuple[list[str], str]:
    """The keys whose values differ between two flattened configs, and `key: saved -> now` for each
    of them a resume may not change unless `resume_changes` names it ("" when there is none)."""
    changed = sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))
    asked = tuple(run.resume_changes)
    refused = [k for k in changed if not _matches(k, FREE_TO_CHANGE) and not _matches(k, asked)]
    return changed, "; ".join(f"{k}: {_short(before.get(k))} -> {_short(after.get(k))}" for k in refused)


# Schedules whose `null` end means "at max_iters" of the run that started them: (section, key, the
# key of the section that is falsy when the schedule is off, what the horizon is, in words). A resume
# that raises max_iters keeps the horizon instead of making the schedule jump.
HORIZONS = (
    ("optim", "lr_decay_iters", None, "the learning rate decays until step {}"),
    ("loss.entropy_penalty", "end_iter", "max", "the entropy penalty reaches its max at step {}"),
)


def keep_horizons(saved: dict, current: dict, run: Config) -> list[str]:
    """Write each schedule's horizon out in both configs (and the run), so it is compared and saved
    as a number; returns a line for each horizon that now differs from max_iters."""
    lines = []
    for section, key, switch, says in HORIZONS:
        saved_node, current_node = _node(saved, section), _node(current, section)
        if saved_node is None or (switch is not None and not saved_node.get(switch)):
            continue  # no such schedule in the run resumed (an older checkpoint, or the schedule off)
        horizon = saved_node[key] = saved_node.get(key) or saved["max_iters"]
        run_node = _attribute(run, section)
        if getattr(run_node, key) is not None:
            continue
        setattr(run_node, key, horizon)
        current_node[key] = horizon
        if horizon != run.max_iters:
            lines.append(f"resume: {says.format(horizon)}, as in the run resumed ({section}.{key})")
    return lines


def _node(tree: dict, dotted: str) -> dict | None:
    for name in dotted.split("."):
        tree = tree.get(name) if isinstance(tree, dict) else None
    return tree


def _attribute(run: Config, dotted: str):
    for name in dotted.split("."):
        run = getattr(run, name)
    return run


def _short(value, limit: int = 80) -> str:
    """A value for a one-line message: long ones (a list of stages) are cut."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _matches(key: str, patterns: tuple[str, ...]) -> bool:
    """Whether `key` is one of `patterns` or lies below one (`system` covers `system.device`)."""
    return any(key == p or key.startswith(f"{p}.") for p in patterns)
