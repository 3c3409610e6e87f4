"""`python -m trainer`. A stop signal while the modules load (a few seconds) ends the command with
one line and the signal's exit code, as one during training does; trainer.cli.main takes over after."""

import os
import signal
import sys

from trainer.cli.signals import STOP_SIGNALS, exit_code, stopped_before_training


def _stopped_while_loading(signal_number, frame):
    print(stopped_before_training(signal_number), file=sys.stderr, flush=True)
    # at once: an exception raised here could land inside an import and be swallowed; nothing is written yet
    os._exit(exit_code(signal_number))


for _signal in STOP_SIGNALS:
    signal.signal(_signal, _stopped_while_loading)

from trainer.cli.main import main  # noqa: E402  (after the handlers: loading takes seconds)

main()
