"""A run folder describes itself: a resume (resume=auto in a run folder, or resume=a checkpoint of
one) continues with the overrides that made the run (its .hydra/overrides.yaml), so the command line
states only what changes; what may change on a resume is checked as before."""

from pathlib import Path

from omegaconf import OmegaConf

STATED_EACH_TIME = ("resume", "resume_changes", "eval_only")  # what a command asks for, not the run's config


def key_of(override: str) -> str:
    return override.split("=", 1)[0].lstrip("+~")


def value_of(overrides: list[str], key: str) -> str | None:
    """The last value given to `key` on the command line, unquoted; None if it is not given."""
    values = [o.split("=", 1)[1].strip("'\"") for o in overrides if "=" in o and key_of(o) == key]
    return values[-1] if values else None


def run_folder(overrides: list[str], resume: str) -> Path | None:
    """The run folder a resume continues: the one the command runs in (resume=auto), or the one
    holding the checkpoint (resume=PATH)."""
    if resume == "auto":
        folder = value_of(overrides, "hydra.run.dir")
        name = value_of(overrides, "run_name")
        return Path(folder) if folder else Path("outputs") / name if name else None
    path = Path(resume).expanduser()
    return next((p for p in (path, path.parent, path.parent.parent) if (p / ".hydra").is_dir()), None)


def with_run_overrides(overrides: list[str]) -> tuple[list[str], str | None]:
    """The overrides of a resumed run followed by the command line's (which win), and a line saying
    which were taken; the command line alone when it starts a run or the folder holds no record."""
    resume = value_of(overrides, "resume")
    folder = run_folder(overrides, resume) if resume not in (None, "none") else None
    stored = folder / ".hydra" / "overrides.yaml" if folder is not None else None
    if stored is None or not stored.is_file():
        return overrides, None
    typed = {key_of(o) for o in overrides}

    def restated(key: str) -> bool:  # typed again, or below a group typed again (tokenizer=char drops tokenizer.*)
        return key in STATED_EACH_TIME or any(key == t or key.startswith(t + ".") for t in typed)

    taken = [o for o in OmegaConf.load(stored) if not restated(key_of(o))]
    if not taken:
        return overrides, None
    return [*taken, *overrides], f"resume: the run's own overrides apply ({stored}): {' '.join(taken)}"
