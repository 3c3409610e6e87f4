"""`logger=[..., plot]`: curves.png in the run folder, redrawn after every evaluation in a background
thread, and once more at the end."""

import atexit
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

from trainer.errors import ConfigError, require_plain_name
from trainer.reporting.callbacks import Callback
from trainer.reporting.plot.curves import METRICS
from trainer.reporting.plot.figure import plot_runs

CURVES = "curves.png"


@dataclass
class PlotLoggerConfig:
    filename: str = CURVES  # a file in the run folder

    def __post_init__(self):
        require_plain_name("logger.plot.filename", self.filename)
        if not self.filename.lower().endswith(".png"):
            raise ConfigError("logger.plot.filename", f"{self.filename!r} is not a .png file", "a name ending in .png")

    def build(self, run_dir: Path, metrics_filename: str = METRICS) -> "PlotLogger":
        """`metrics_filename`: the JSONL logger's file in `run_dir` (logger.jsonl.filename)."""
        return PlotLogger(run_dir / metrics_filename, run_dir / self.filename)


class PlotLogger(Callback):
    """Keeps a PNG of the run's curves up to date: redrawn after every evaluation, and at the end.

    It reads the records back from `metrics_path`, so it must come after the JSONL logger in the
    callback list (that one appends synchronously, before this one is called). Drawing takes a
    few hundred milliseconds, so it happens in one background thread: requests made while a draw
    is running are merged into one draw after it, which reads the newest records. A failed draw
    is reported in one line on stderr (once while the same failure repeats) and training goes on.
    """

    def __init__(self, metrics_path: Path, out: Path):
        self.metrics_path, self.out = metrics_path, out
        self._wake = threading.Condition()
        self._pending = self._closing = self._drawing = False
        self._worker: threading.Thread | None = None
        self._last_error: str | None = None

    def on_eval(self, trainer, record: dict) -> None:
        self.request_draw()

    @property
    def idle(self) -> bool:
        """No draw running in the background, none requested."""
        with self._wake:
            return not (self._pending or self._drawing)

    def on_train_end(self, trainer) -> None:
        self.close()
        self.draw_now()  # the final curves, complete before fit() returns

    def request_draw(self) -> None:
        """Ask the background thread for a draw of the current records; returns at once."""
        with self._wake:
            self._pending = True
            if self._worker is None:
                # a daemon, so a run that stops by an exception never hangs on it; atexit lets a draw finish
                self._worker = threading.Thread(target=self._work, name="plot-logger", daemon=True)
                self._worker.start()
                atexit.register(self.close)
            self._wake.notify()

    def close(self) -> None:
        """Wait for a draw in progress, then stop the thread; a request not yet started is dropped."""
        with self._wake:
            worker, self._closing = self._worker, True
            self._wake.notify()
        if worker is not None:
            worker.join()
            atexit.unregister(self.close)
        with self._wake:
            self._worker, self._pending, self._closing = None, False, False

    def draw_now(self) -> None:
        """Draw in the calling thread; a failure is reported, not raised."""
        try:
            plot_runs([self.metrics_path.parent], self.out, self.metrics_path.name)
        except Exception as err:  # whatever goes wrong in a plot must not stop training
            self._report(f"{type(err).__name__}: {err}")
        else:
            self._last_error = None

    def _work(self) -> None:
        while True:
            with self._wake:
                self._wake.wait_for(lambda: self._pending or self._closing)
                if self._closing:
                    return
                self._pending, self._drawing = False, True
            try:
                self.draw_now()
            finally:
                with self._wake:
                    self._drawing = False

    def _report(self, problem: str) -> None:
        if problem != self._last_error:
            line = " ".join(problem.split())  # one line, whatever the exception's message holds
            print(f"warning: {self.out} not drawn: {line}", file=sys.stderr, flush=True)
        self._last_error = problem
