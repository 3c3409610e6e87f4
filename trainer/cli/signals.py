"""The stop signals and what they mean for the command's exit (also a submitit job a signal ended
without a result). Imports nothing heavy: the entry point installs its first handlers with it before
the rest of the package loads."""

import os
import re
import signal
import sys
from collections.abc import Callable
from pathlib import Path

# SIGTERM (a scheduler's stop), SIGUSR1 (SLURM's warning before the end of a job), SIGUSR2 (the one
# submitit asks SLURM for, hydra/launcher=slurm), SIGINT (Ctrl-C)
STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2, signal.SIGINT)
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as a shell reports it
EXIT_TERMINATED = 143  # 128 + SIGTERM; also after SIGUSR1
EXIT_JOB_LOST = 1  # a job run by submitit ended without a result (stopped, killed)


def exit_code(signal_number: int) -> int:
    return EXIT_INTERRUPTED if signal_number == signal.SIGINT else EXIT_TERMINATED


def nothing_written_while_loading() -> None:
    """A stop signal while a command's modules load (a few seconds) ends it with one line and the
    signal's exit code; the command's own handlers take over once loaded."""

    def stopped(signal_number, frame):
        print("interrupted: nothing written", file=sys.stderr, flush=True)
        os._exit(exit_code(signal_number))  # at once: an exception raised here could land inside an import

    for stop_signal in STOP_SIGNALS:
        signal.signal(stop_signal, stopped)


def stopped_before_training(signal_number: int) -> str:
    """The one line a stop before training prints."""
    return f"stopped by {signal.Signals(signal_number).name} before training started: nothing was trained or kept"


def submitit_requeue() -> tuple[int, Callable] | None:
    """In a job that submitit runs (hydra/launcher=slurm or slurm_local): its pre-emption signal and
    submitit's handler of it, which pickles the job again and requeues it (at most max_num_timeout
    times after a time limit); None elsewhere. The trainer takes the signal over to finish its step and
    write a checkpoint first, then hands over to it (the requeued job continues with resume=auto)."""
    environment = sys.modules.get("submitit.core.job_environment")
    if environment is None:
        return None
    signal_number = environment.JobEnvironment._usr_sig()
    handler = signal.getsignal(signal_number)
    if not isinstance(getattr(handler, "__self__", None), environment.SignalHandler):
        return None
    return signal_number, handler


def job_without_result(err: Exception) -> None:
    """A job submitit ran that ended without a result (stopped by SIGTERM or scancel, killed, out of
    memory): one line naming its logs, and the sweep continues with resume=auto."""
    result = re.search(r"with path (\S+)", str(err))
    logs = f"its logs are in {Path(result.group(1)).parent}" if result else "its logs are in .submitit/"
    print(f"error: a job of the sweep ended without a result ({logs}); continue it with resume=auto", file=sys.stderr)
    sys.exit(EXIT_JOB_LOST)
