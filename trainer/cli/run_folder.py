"""The job's claim on its run folder (trainer/run_lock.py): taken before anything is written there,
given back when the job ends, however it ends (done, diverged, stopped, refused, a bug).

Under torchrun rank 0 alone claims the folder every rank shares; when another run holds it, every
rank ends with the same one line.
"""

import functools
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode

from trainer.distributed import Distributed
from trainer.errors import ConfigError
from trainer.run_lock import RunLock, claim, release

_held: list[RunLock] = []  # the claim of the job running in this process


def claim_run_folder(run_dir: Path, dist: Distributed) -> bool:
    """Claim `run_dir` for this job; ConfigError when a live run holds it. Returns whether the
    folder held nothing else (on rank 0): this job made it, and a stop before training removes it."""
    key = "hydra.sweep.dir" if HydraConfig.get().mode == RunMode.MULTIRUN else "hydra.run.dir"
    refusal, fresh = None, False
    if dist.is_main:
        try:
            lock = claim(run_dir, key)
        except ConfigError as err:
            refusal = (err.key, err.problem, err.allowed)
        else:
            _held.append(lock)
            fresh = lock.fresh
    refusal = dist.share(refusal)
    if refusal is not None:
        raise ConfigError(*refusal)
    return fresh


def release_run_folder() -> None:
    """Give back the claim of this process's job (none: nothing to do)."""
    while _held:
        release(_held.pop())


def releases_run_folder(task):
    """Hydra's task function, giving back the job's claim on its run folder when the job ends."""

    @functools.wraps(task)
    def job(cfg):
        try:
            return task(cfg)
        finally:
            release_run_folder()

    return job
