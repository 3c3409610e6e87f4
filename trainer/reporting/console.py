"""The console: a rich progress bar (it/s, loss, lr, ETA), eval tables and one-line events.

On a terminal the bar carries the running loss; when output goes to a file or CI log, each log
step prints one plain line instead, so the log stays readable.
"""

import re
from dataclasses import dataclass
from pathlib import Path

from rich import box
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskProgressColumn, TextColumn, TimeRemainingColumn
from rich.table import Table

from trainer.reporting.callbacks import Callback
from trainer.reporting.summary import describe, run_summary
from trainer.reporting.timing import PHASES, shares
from trainer.snapshot import ROOT, source_files
from trainer.transfer import parameter_summary

RETURN = "\u21b5"  # a newline in a sample on the console
STAGE_KEY = re.compile(r"^val/stage_(\d+)_(\w+)$")


@dataclass
class ConsoleLoggerConfig:
    progress_bar: bool = True  # a live bar on a terminal; plain lines in a log file either way
    print_source: bool = False  # print the run's source files (as copied to source/) at the start

    def build(self, console: Console) -> "ConsoleLogger":
        return ConsoleLogger(console, self.progress_bar, self.print_source)


class ConsoleLogger(Callback):
    def __init__(self, console: Console, progress_bar: bool = True, print_source: bool = False):
        self.console, self.print_source = console, print_source
        self.live = progress_bar and console.is_terminal
        self.progress: Progress | None = None

    def on_train_start(self, trainer) -> None:
        if self.print_source:
            for relative in source_files():
                self.console.rule(str(relative))
                self.console.print((ROOT / relative).read_text(), highlight=False, markup=False, soft_wrap=True)
        self.console.print(parameter_summary(trainer.runtime.raw_model), highlight=False, soft_wrap=True)
        if trainer.files.resumed_from is not None:
            state = trainer.state
            self.console.print(
                f"resumed from {trainer.files.resumed_from} at step {state.step} "
                f"(stage {trainer.curriculum.stage}, best val {state.best_val_loss:.4f})",
                highlight=False,
                soft_wrap=True,
            )
        if not self.live:
            return
        self.progress = Progress(
            TextColumn("[bold]train"),
            BarColumn(),
            MofNCompleteColumn(),
            TaskProgressColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),  # before the long columns, so a narrow terminal still shows it
            TextColumn("{task.fields[speed]} it/s"),
            TextColumn("loss {task.fields[loss]}"),
            TextColumn("lr {task.fields[lr]}"),
            TextColumn("{task.fields[time]}"),
            console=self.console,
        )
        self.task = self.progress.add_task(
            "train", total=trainer.cfg.max_iters, completed=trainer.state.step, loss="-", lr="-", speed="-", time=""
        )
        self.progress.start()

    def on_step_end(self, trainer, metrics) -> None:
        if self.progress is not None:
            self.progress.update(self.task, completed=trainer.state.step)

    def on_log(self, trainer, record: dict) -> None:
        time_shares = shares({phase: record.get(f"time/{phase}_ms", 0.0) for phase in PHASES})
        if self.progress is not None:
            self.progress.update(
                self.task,
                loss=f"{record['train/loss']:.4f}",
                lr=f"{record['lr']:.2e}",
                speed=f"{1000 / record['ms_per_step']:.1f}",
                time=time_shares,
            )
        else:
            self.console.print(
                f"step {record['step']:>6} | loss {record['train/loss']:.4f} | lr {record['lr']:.2e} | "
                f"{record['ms_per_step']:.1f} ms/step | {record['tokens_per_second']:,.0f} tok/s | "
                f"grad norm {record['grad_norm']:.3f} | {time_shares} | ETA {eta(trainer, record)}",
                highlight=False,
                soft_wrap=True,
            )

    def on_eval(self, trainer, record: dict) -> None:
        overall = {k: v for k, v in record.items() if not STAGE_KEY.match(k)}
        summary = ", ".join(f"{k} {v:.4f}" for k, v in overall.items())
        self.console.print(f"[bold]eval at step {trainer.state.step}[/bold]: {summary}", soft_wrap=True)
        if len(trainer.curriculum.validation) > 1:
            columns = trainer.cfg.mode.stage_metrics
            self.console.print(stage_table(record, trainer.curriculum, trainer.curriculum.stage, columns))

    def on_samples(self, trainer, samples: list[dict]) -> None:
        settings = samples[0].get("settings")
        shown = " · " + " ".join(f"{k}={v!r}" for k, v in settings.items()) if settings else ""
        self.console.print(f"[bold]samples at step {trainer.state.step}[/bold]{escape(shown)}", soft_wrap=True)
        for record in samples:
            self.console.print(sample_lines(record), markup=False, highlight=False, soft_wrap=True)

    def on_event(self, trainer, message: str, record: dict) -> None:
        self.console.print(f"[bold yellow]{message}[/bold yellow]", soft_wrap=True)

    def on_checkpoint(self, trainer, path: Path, is_best: bool) -> None:
        note = " (new best)" if is_best else ""
        self.console.print(f"saved checkpoint {path}{note}", highlight=False, soft_wrap=True)

    def on_train_end(self, trainer) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress = None
        self.console.print(describe(run_summary(trainer, "done")), highlight=False, soft_wrap=True)


def eta(trainer, record: dict) -> str:
    """The time the remaining steps take at this interval's pace (a log without a progress bar)."""
    seconds = int((trainer.cfg.max_iters - record["step"]) * record["ms_per_step"] / 1000)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def visible(text: str) -> str:
    """A sample on one console line: a newline shows as one character (a return arrow, so marks under
    the text stay in place), and other control characters as escapes (a barely trained byte model
    writes some)."""
    return "".join(RETURN if c == "\n" else c if c == "\t" or c.isprintable() else repr(c)[1:-1] for c in text)


def sample_lines(record: dict) -> str:
    """A sample as console lines: its text, and what a mode adds (marks under the text, a score)."""
    label = f"seed {record['seed']}" if "seed" in record else f"row {record['sample']}"
    marked = {key: value for key, value in record.items() if key in ("replaced", "predicted", "filled")}
    text = visible(record["text"])
    indent = " " * (len(label) + 3)
    lines = [f"[{label}] {text}", *(f"{indent}{value}  <- {key}" for key, value in marked.items())]
    numbers = [f"{key} {value:.3f}" for key, value in record.items() if key in ("regenerated", "score")]
    if numbers:
        lines.append(f"{indent}{', '.join(numbers)}")
    return "\n".join(lines)


def stage_table(record: dict, curriculum, current: int, columns: dict[str, str]) -> Table:
    """One row per validation stage, one column per metric the mode reports per stage (`columns`:
    metric -> title); the training stage in progress is marked."""
    table = Table(title="validation stages", title_justify="left", box=box.SIMPLE_HEAD, padding=(0, 1))
    table.add_column("stage", justify="right")
    table.add_column("strategy", no_wrap=True)
    for title in columns.values():
        table.add_column(title, justify="right")
    for index, stage in enumerate(curriculum.validation):
        marker = " *" if index == current and curriculum.validation is curriculum.train else ""
        values = [record[f"val/stage_{index}_{key}"] for key in columns]
        table.add_row(f"{index}{marker}", stage.describe(), *(f"{v:.4f}" for v in values))
    return table
