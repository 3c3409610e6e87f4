"""`python -m trainer.evaluate checkpoint=PATH [split=test|val] [data=...]`: a checkpoint's likelihood on
a whole split (see trainer/cli/evaluate.py and conf/evaluate.yaml). A stop signal while the modules
load ends the command with one line."""

import os
import signal
import sys

from trainer.cli.signals import STOP_SIGNALS, exit_code


def _stopped_while_loading(signal_number, frame):
    print("interrupted: nothing written", file=sys.stderr, flush=True)
    os._exit(exit_code(signal_number))  # at once: an exception raised here could land inside an import


for _signal in STOP_SIGNALS:
    signal.signal(_signal, _stopped_while_loading)

from trainer.cli.evaluate import main  # noqa: E402  (after the handlers: loading takes seconds)

main()
