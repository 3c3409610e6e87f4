"""A stop signal while a job is being built: where the engine honours it.

The command's handler only notes a stop that comes before training, because raising from a handler
could land inside an import or a file write. The engine names the places where leaving is safe:
reading and tokenising a corpus touches memory only and is the longest wait of a start on a large
text (it is left at once), and the first file the job writes (the data cache entry) is written only
if no stop came before it. So a stop before training keeps nothing.
"""

from collections.abc import Callable
from contextlib import contextmanager

_leave: Callable[[], None] | None = None  # ends the command; set by its handler once a stop came
_inside = 0  # how deep in interruptible stretches the job is


def stop_requested(leave: Callable[[], None]) -> None:
    """From the command's stop handler: `leave` ends the command (one line, its folders removed). It
    is called at once inside an interruptible stretch, otherwise at the engine's next `check_stop`."""
    global _leave
    _leave = leave
    if _inside:
        leave()


def check_stop() -> None:
    """Before a file is written: end the command if a stop came while the job was being built."""
    if _leave is not None:
        _leave()


@contextmanager
def interruptible():
    """A stretch that writes nothing (reading and tokenising a corpus): a stop ends it at once."""
    global _inside
    check_stop()
    _inside += 1
    try:
        yield
    finally:
        _inside -= 1
