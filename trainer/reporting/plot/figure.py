"""Drawing runs' curves into a PNG with matplotlib's object API and the Agg canvas (no pyplot, no
display; safe in a thread). Panels against the step: train and val loss; the val loss of each
validation stage, when a run has them; the learning rate. Events are vertical lines, one line style
per kind, in the run's colour. matplotlib is imported only when something is drawn."""

import functools
import os
import threading
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from trainer.reporting.plot.curves import EVENT_KINDS, METRICS, RunCurves, load_runs

DPI = 100
WIDTH_INCHES = 10
# the run legend above the panels: labels wrapped to the figure's width, in two columns for many runs
LEGEND_CHARACTERS = 150
MAX_RUNS_IN_ONE_COLUMN = 4
STAGES_PER_LEGEND_COLUMN = 14  # as many as fit the panel's height
STAGE_LIGHTEST = 0.7  # the last stage's line: the run's colour this far towards white

# fonts with the glyphs of other scripts (CJK above all), tried in this order after the default one
FALLBACK_FONTS = (
    "Noto Sans CJK SC",
    "Noto Sans CJK JP",
    "Source Han Sans SC",
    "WenQuanYi Zen Hei",
    "Droid Sans Fallback",
    "Microsoft YaHei",
    "PingFang SC",
    "Arial Unicode MS",
)

# One line style per event kind, in EVENT_KINDS' order; the colour is the run's.
EVENT_STYLES = dict(zip(EVENT_KINDS, ("--", "-.", ":", (0, (6, 2, 1, 2, 1, 2)), "-")))


def plot_runs(run_dirs: Sequence[Path], out: Path, metrics_filename: str = METRICS) -> Path:
    """Draw the runs of `run_dirs` (folders holding `metrics_filename`) overlaid into the PNG `out`; returns `out`."""
    draw(load_runs(run_dirs, metrics_filename), Path(out))
    return Path(out)


def draw(runs: list[RunCurves], out: Path) -> None:
    """Draw `runs` into the PNG `out` atomically: 1000 px wide, the run legend above 2 or 3 panels of 250 px."""
    quiet_missing_glyphs()
    last_stage = max((stage for run in runs for stage in run.stage_losses), default=None)
    staged = last_stage is not None
    colours = run_colours(len(runs))
    figure, axes = figure_with_panels(runs, colours, panels=3 if staged else 2)
    for run, colour in zip(runs, colours):
        draw_losses(axes[0], run, colour)
        if staged:
            draw_stage_losses(axes[1], run, colour, last_stage)
        draw_lr(axes[-1], run, colour)
        for ax in axes:
            draw_events(ax, run.events, colour)
    label_axes(axes, staged)
    style_legend(axes[0], {kind for run in runs for kind in run.events})
    if staged:
        stage_legend(axes[1], last_stage)
    save_atomically(figure, out)


def figure_with_panels(runs: list[RunCurves], colours: list, panels: int) -> tuple:
    """A figure with the run legend on top and `panels` axes sharing the step axis under it; returns both."""
    # The object API with an Agg canvas: no pyplot, no global backend, no display; safe in a thread.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(WIDTH_INCHES, 1), dpi=DPI)
    FigureCanvasAgg(figure)
    # the legend first, anchored to the top: its height (labels wrapped to several lines) decides the figure's
    legend = run_legend(figure, runs, colours)
    layout = Layout(panels, legend=legend.get_window_extent(figure.canvas.get_renderer()).height / DPI)
    figure.set_size_inches(WIDTH_INCHES, layout.height)
    axes = figure.subplots(panels, 1, sharex=True, squeeze=False, gridspec_kw=layout.margins())[:, 0]
    return figure, axes


@dataclass
class Layout:
    """Fixed margins in inches. Cheaper than a layout engine, which lays the figure out twice per draw
    (a draw takes ~40% less CPU time): the draw holds the GIL, and the training loop waits for it."""

    panels: int
    legend: float  # the height of the run legend above the panels
    left: float = 0.8  # tick labels and the y label
    right: float = 1.35  # the legends right of the panels
    bottom: float = 0.55  # tick labels and the x label
    panel: float = 2.5
    gap: float = 0.3  # room for the scale (e.g. 1e-3) above a panel's y axis

    @property
    def top(self) -> float:
        return self.legend + 0.1

    @property
    def height(self) -> float:
        return self.top + self.panels * self.panel + (self.panels - 1) * self.gap + self.bottom

    def margins(self) -> dict[str, float]:
        """As fractions of the figure, for a GridSpec."""
        return {
            "left": self.left / WIDTH_INCHES,
            "right": 1 - self.right / WIDTH_INCHES,
            "top": 1 - self.top / self.height,
            "bottom": self.bottom / self.height,
            "hspace": self.gap / self.panel,
        }


def run_colours(count: int) -> list:
    """One distinct colour per run: the 10 tab10 colours, then evenly spaced ones from a colormap."""
    from matplotlib import colormaps

    if count <= 10:
        return [colormaps["tab10"](i) for i in range(count)]
    return [colormaps["turbo"](i / (count - 1)) for i in range(count)]


def lighter(colour, fraction: float) -> tuple:
    """`colour` mixed with white: 0 is the colour itself, 1 is white."""
    from matplotlib.colors import to_rgb

    return tuple(c + (1 - c) * fraction for c in to_rgb(colour))


def draw_losses(ax, run: RunCurves, colour) -> None:
    ax.plot(run.train_loss.steps, run.train_loss.values, color=colour, linewidth=1, alpha=0.55)
    ax.plot(run.val_loss.steps, run.val_loss.values, color=colour, linewidth=1.8, marker="o", markersize=3)


def stage_shade(colour, stage: int, last_stage: int) -> tuple:
    """The colour of a stage's line: the run's colour for stage 0, lighter up to `last_stage` (of all runs)."""
    return lighter(colour, STAGE_LIGHTEST * stage / max(1, last_stage))


def draw_stage_losses(ax, run: RunCurves, colour, last_stage: int) -> None:
    for stage, curve in run.stage_losses.items():
        shade = stage_shade(colour, stage, last_stage)
        ax.plot(curve.steps, curve.values, color=shade, linewidth=1.3, marker=".", markersize=3)


def stage_legend(ax, last_stage: int) -> None:
    """Which shade is which stage, in grey (every run shades its colour the same way), right of the panel."""
    from matplotlib.lines import Line2D

    handles = [
        Line2D([], [], color=stage_shade("dimgrey", stage, last_stage), linewidth=2, label=str(stage))
        for stage in range(last_stage + 1)
    ]
    columns = 1 + last_stage // STAGES_PER_LEGEND_COLUMN
    ax.legend(
        handles=handles, title="stage", loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize="x-small", ncols=columns
    )


def draw_lr(ax, run: RunCurves, colour) -> None:
    ax.plot(run.lr.steps, run.lr.values, color=colour, linewidth=1.3)


def draw_events(ax, events: dict[str, list[int]], colour) -> None:
    # x in data coordinates, y across the whole panel; one collection per kind, however many events
    transform = ax.get_xaxis_transform()
    for kind, steps in events.items():
        ax.vlines(steps, 0, 1, transform=transform, colors=[colour], linestyles=[EVENT_STYLES[kind]], linewidth=1)


def label_axes(axes, staged: bool) -> None:
    axes[0].set_ylabel("loss")
    if staged:
        axes[1].set_ylabel("val loss per stage")
    axes[-1].set_ylabel("learning rate")
    axes[-1].ticklabel_format(axis="y", style="sci", scilimits=(-2, 3))
    axes[-1].set_xlabel("step")
    for ax in axes:
        ax.grid(True, alpha=0.3)


def run_legend(figure, runs: list[RunCurves], colours: list):
    """Which colour is which run, above the panels; labels wrapped to the figure's width. Returns the legend."""
    import textwrap

    from matplotlib.lines import Line2D

    columns = 1 if len(runs) <= MAX_RUNS_IN_ONE_COLUMN else 2
    width = LEGEND_CHARACTERS // columns
    handles = [
        Line2D([], [], color=colour, linewidth=2, label=textwrap.fill(run.label, width, subsequent_indent="  "))
        for run, colour in zip(runs, colours)
    ]
    font = {"family": ["sans-serif", *fallback_fonts()], "size": "small"}
    return figure.legend(
        handles=handles, loc="upper left", bbox_to_anchor=(0, 1), ncols=columns, prop=font, frameon=False
    )


@functools.cache
def fallback_fonts() -> tuple[str, ...]:
    """The installed fonts of FALLBACK_FONTS, for the glyphs of a label the default font lacks."""
    from matplotlib import font_manager

    installed = {font.name for font in font_manager.fontManager.ttflist}
    return tuple(name for name in FALLBACK_FONTS if name in installed)


def quiet_missing_glyphs() -> None:
    """A label in a script no installed font covers (run_name=实验 where no CJK font is installed) is
    drawn as boxes, without matplotlib's warning per glyph on stderr. A filter, not catch_warnings():
    the draw runs in a thread, and catch_warnings() would swap the process's filters under the others."""
    warnings.filterwarnings("ignore", message=r"Glyph \d+ .* missing from font", category=UserWarning)


def style_legend(ax, event_kinds: set[str]) -> None:
    """What the line styles mean (the same in every run's colour), right of the panel: losses, then events."""
    from matplotlib.lines import Line2D

    handles = [
        Line2D([], [], color="grey", linewidth=1, alpha=0.55, label="train loss"),
        Line2D([], [], color="grey", linewidth=1.8, marker="o", markersize=3, label="val loss"),
    ]
    handles += [
        Line2D([], [], color="grey", linestyle=style, linewidth=1, label=kind)
        for kind, style in EVENT_STYLES.items()
        if kind in event_kinds
    ]
    ax.legend(handles=handles, loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize="x-small")


def save_atomically(figure, out: Path) -> None:
    """Render into a temporary file next to `out`, then rename it over `out` (atomic on one file system)."""
    # pid and thread in the name: two writers of the same file never share a temporary file
    staging = out.with_name(f".{out.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        with staging.open("wb") as file:
            figure.savefig(file, format="png", dpi=DPI)
        os.replace(staging, out)
    finally:
        staging.unlink(missing_ok=True)  # only left when rendering or the rename failed
