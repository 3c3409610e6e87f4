"""What a config field says about resuming, declared on the field itself (DESIGN: "what may change on
resume as field metadata"), so a new knob carries its own rule instead of joining a central list:

    max_iters: int = field(default=600, metadata=FREE_ON_RESUME)
    lr_decay_iters: int | None = field(default=None, metadata=horizon("the learning rate decays until step {}"))

A resumed run compares its config with the checkpoint's (trainer/resume.py): the keys declared free
on resume (and every key below them) may change without `resume_changes`; a horizon is a schedule's
end whose null means "at max_iters of the run that started it", which a resume keeps as a number.
"""

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, fields, is_dataclass

# run length, reporting, where files go: a resumed run may change it without asking
FREE_ON_RESUME = {"resume": "free"}


@dataclass(frozen=True)
class Horizon:
    key: str  # dotted, e.g. optim.lr_decay_iters
    says: str  # what the horizon is, in words, with {} for the step
    off_when_zero: str | None = None  # the sibling field whose 0 turns the schedule off


def horizon(says: str, off_when_zero: str | None = None) -> dict:
    """The metadata of a schedule's end that a resume keeps."""
    return {"horizon": {"says": says, "off_when_zero": off_when_zero}}


def free_on_resume(config) -> tuple[str, ...]:
    """The dotted keys of a tree of config dataclasses that a resumed run may change."""
    return tuple(key for key, declared in _declarations(config) if declared.get("resume") == "free")


def horizons(config) -> list[Horizon]:
    """The schedule horizons declared in a tree of config dataclasses."""
    return [Horizon(key, **declared["horizon"]) for key, declared in _declarations(config) if "horizon" in declared]


def _declarations(node, prefix: str = "") -> Iterator[tuple[str, Mapping]]:
    """(dotted key, metadata) of each field that declares something, in the dataclasses of the tree
    (the run's own instances: a mode's or a strategy's fields are those of the chosen one)."""
    for spec in fields(node):
        key = f"{prefix}{spec.name}"
        if spec.metadata:
            yield key, spec.metadata
        value = getattr(node, spec.name)
        if is_dataclass(value):
            yield from _declarations(value, f"{key}.")
