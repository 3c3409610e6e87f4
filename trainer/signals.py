"""The stop signals and what they mean for the command's exit. Imports nothing heavy: the entry
point installs its first handlers with it before the rest of the package loads."""

import signal

# SIGTERM (a scheduler's stop), SIGUSR1 (SLURM's warning before the end of a job), SIGINT (Ctrl-C)
STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR1, signal.SIGINT)
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as a shell reports it
EXIT_TERMINATED = 143  # 128 + SIGTERM; also after SIGUSR1


def exit_code(signal_number: int) -> int:
    return EXIT_INTERRUPTED if signal_number == signal.SIGINT else EXIT_TERMINATED


def stopped_before_training(signal_number: int) -> str:
    """The one line a stop before training prints."""
    return f"stopped by {signal.Signals(signal_number).name} before training started: nothing was trained or kept"
