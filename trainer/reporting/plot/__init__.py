"""Loss curves of runs as a PNG (`curves.png`), drawn from the records of `metrics.jsonl`: the
`plot` logger redraws a run's during training, `python -m trainer.plot` overlays several runs'
(e.g. every job of a sweep). The PNG is written atomically: a reader never sees a half-written one.
"""

from trainer.reporting.plot.curves import RunCurves, Series, curves_of, load_runs, read_records, run_labels, sweep_jobs
from trainer.reporting.plot.figure import draw, plot_runs
from trainer.reporting.plot.logger import CURVES, PlotLogger, PlotLoggerConfig

__all__ = [
    "CURVES",
    "PlotLogger",
    "PlotLoggerConfig",
    "RunCurves",
    "Series",
    "curves_of",
    "draw",
    "load_runs",
    "plot_runs",
    "read_records",
    "run_labels",
    "sweep_jobs",
]
