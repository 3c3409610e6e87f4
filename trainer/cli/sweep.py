"""The end of a sweep: one row per job (its overrides, best val loss, status) on the console and in
sweep_summary.csv in the sweep folder. Hydra calls it after the last job (`hydra.callbacks` in
conf/config.yaml); it reads each job's summary.json, so it works whatever launcher ran the jobs.

The status is the run's (done, diverged, stopped by SIGTERM, ...; not finished without a summary),
except that a job this launch continued from a checkpoint and finished reads `resumed`. A job that a
re-launch with resume=auto found finished and skipped wrote nothing, and reads `done`.
"""

import csv
import json
import time
from pathlib import Path

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf
from rich.console import Console
from rich.table import Table
from rich.text import Text

from trainer.distributed import rank_from_env
from trainer.reporting.summary import SUMMARY

CSV_NAME = "sweep_summary.csv"
COLUMNS = ("job", "status", "best_val_loss", "best_step", "step", "overrides")


def job_rows(sweep_dir: Path, launched_at: float = 0.0) -> list[dict]:
    """One row per job folder under `sweep_dir` (a folder holding .hydra/overrides.yaml), in job order;
    `launched_at`: when this launch of the sweep started (time.time())."""
    rows = []
    for overrides_file in sweep_dir.rglob(".hydra/overrides.yaml"):
        folder = overrides_file.parent.parent
        summary_file = folder / SUMMARY
        summary = json.loads(summary_file.read_text()) if summary_file.exists() else {}
        rows.append(
            {
                "job": str(folder.relative_to(sweep_dir)),
                "status": job_status(summary, summary_file, launched_at),
                "best_val_loss": summary.get("best_val_loss"),
                "best_step": summary.get("best_step"),
                "step": summary.get("step"),
                "overrides": " ".join(OmegaConf.load(overrides_file)),
            }
        )
    return sorted(
        rows, key=lambda row: (not row["job"].isdigit(), int(row["job"]) if row["job"].isdigit() else 0, row["job"])
    )


def job_status(summary: dict, summary_file: Path, launched_at: float) -> str:
    """The run's status; `resumed` for a run this launch continued from a checkpoint and finished."""
    status = summary.get("status", "not finished")
    if status == "done" and summary.get("resumed_from") and summary_file.stat().st_mtime >= launched_at:
        return "resumed"
    return status


def write_csv(rows: list[dict], path: Path) -> None:
    with path.open("w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)


def table(rows: list[dict]) -> Table:
    table = Table(title="sweep", title_justify="left")
    for column in COLUMNS:
        table.add_column(column, justify="right" if column in ("best_val_loss", "best_step", "step") else "left")
    for row in rows:
        loss = row["best_val_loss"]
        cells = {**row, "best_val_loss": "-" if loss is None else f"{loss:.4f}"}
        # Text, not markup: overrides such as logger=[console,jsonl] hold brackets
        table.add_row(*(Text("-" if cells[c] is None else str(cells[c])) for c in COLUMNS))
    return table


class SweepSummary(Callback):
    def __init__(self) -> None:
        self.launched_at = time.time()

    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        self.launched_at = time.time()

    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        if rank_from_env() != 0:  # under torchrun, rank 0 reports the sweep
            return
        sweep_dir = Path(config.hydra.sweep.dir)
        rows = job_rows(sweep_dir, self.launched_at)
        if not rows:
            return
        write_csv(rows, sweep_dir / CSV_NAME)
        console = Console()
        console.print(table(rows))
        console.print(f"sweep summary: {sweep_dir / CSV_NAME}", highlight=False)
