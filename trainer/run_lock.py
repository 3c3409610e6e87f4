"""The run folder's lock: one run at a time writes into a folder.

A run claims its folder before it writes anything there, by creating `<run folder>/.lock` exclusively
(`O_CREAT | O_EXCL`: of two processes started at the same moment, exactly one creates it); the lock
names the process (pid and host) and is removed when the run ends, however it ends. A lock whose
process is gone (killed with SIGKILL, a lost node) is stale when its process is not alive on this
host: the next run takes it over. A lock of another host cannot be checked from here, so it holds
until that run ends or the user removes it.
"""

import contextlib
import fcntl
import json
import os
import socket
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from trainer.errors import ConfigError

LOCK = ".lock"
# a lock that holds no process yet is one being written (microseconds), or one whose writer died
# between creating and writing it: stale after this long
UNWRITTEN_GRACE_S = 60


@dataclass(frozen=True)
class RunLock:
    """A claimed run folder: the lock file, what this process wrote in it, and whether the folder
    held nothing else when it was claimed (this job made it)."""

    path: Path
    text: str
    fresh: bool


def claim(run_dir: Path, key: str) -> RunLock:
    """Claim the existing folder `run_dir` for this process; ConfigError naming `key` when a live run
    holds it. A stale lock is taken over."""
    path = run_dir / LOCK
    text = json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "since": datetime.now().isoformat()})
    with _claimers_one_at_a_time(run_dir):  # so that two of them do not both take over a stale lock
        refuse_if_in_use(run_dir, key)
        path.unlink(missing_ok=True)  # a stale lock
        fresh = not any(run_dir.iterdir())
        try:
            descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:  # a claimer the folder's flock could not hold back (a filesystem without flock)
            raise _in_use(run_dir, key, live_holder(path) or "a run that claimed it at the same moment") from None
        with os.fdopen(descriptor, "w") as file:
            file.write(text + "\n")
    return RunLock(path, text + "\n", fresh)


def release(lock: RunLock) -> None:
    """Remove the lock if it is still this process's (a job stopped before training removes its
    whole folder, the lock with it)."""
    with contextlib.suppress(OSError):
        if lock.path.read_text() == lock.text:
            lock.path.unlink()


def refuse_if_in_use(run_dir: Path, key: str) -> None:
    """ConfigError naming `key` when a live run holds `run_dir`."""
    holder = live_holder(run_dir / LOCK)
    if holder is not None:
        raise _in_use(run_dir, key, holder)


def _in_use(run_dir: Path, key: str, holder: str) -> ConfigError:
    return ConfigError(
        key,
        f"{run_dir} is in use by a running run ({holder}; lock {run_dir / LOCK})",
        "another run_name (or hydra.run.dir) for a new run, or resume=auto once that run has ended",
    )


def live_holder(path: Path) -> str | None:
    """Who holds the lock at `path`, in words; None when there is no lock or its process is gone."""
    try:
        text, age = path.read_text(), time.time() - path.stat().st_mtime
    except FileNotFoundError:
        return None
    except OSError as err:
        return f"a lock that cannot be read: {err.strerror}"
    try:
        holder = json.loads(text)
        pid, host = int(holder["pid"]), str(holder["host"])
    except (ValueError, KeyError, TypeError):
        return None if age > UNWRITTEN_GRACE_S else "a run that is starting"
    if host != socket.gethostname():
        return f"pid {pid} on host {host}, which cannot be checked from here: remove the lock if that run has ended"
    return f"pid {pid} on this host ({host})" if _alive(pid) else None


def _alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    try:  # a zombie (killed, and not yet reaped by its parent) runs nothing
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] != "Z"
    except (OSError, IndexError):
        return True


@contextlib.contextmanager
def _claimers_one_at_a_time(run_dir: Path):
    """An advisory lock on the folder itself while a claim looks and creates (released by the kernel
    if the process dies); where the filesystem has none, the exclusive create alone decides."""
    descriptor = os.open(run_dir, os.O_RDONLY)
    try:
        with contextlib.suppress(OSError):
            fcntl.flock(descriptor, fcntl.LOCK_EX)
        yield
    finally:
        os.close(descriptor)
