"""`python -m trainer`. A stop signal while the modules load (a few seconds) ends the command with
one line and the signal's exit code, as one during training does; trainer.cli takes over after."""

import os
import signal
import sys


def _stopped_while_loading(signal_number, frame):
    name = signal.Signals(signal_number).name
    print(f"stopped by {name} before training started: nothing was trained or kept", file=sys.stderr, flush=True)
    # at once: an exception raised here could land inside an import and be swallowed; nothing is written yet
    os._exit(130 if signal_number == signal.SIGINT else 143)


for _signal in (signal.SIGTERM, signal.SIGUSR1, signal.SIGINT):
    signal.signal(_signal, _stopped_while_loading)

from trainer.cli import main  # noqa: E402  (after the handlers: loading takes seconds)

main()
