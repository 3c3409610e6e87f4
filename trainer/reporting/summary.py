"""The end of a run: what it achieved and where its files are, for the console and summary.json
(which the sweep summary reads for each job)."""

import os
from pathlib import Path

import torch

from trainer.checkpoint import BEST
from trainer.reporting import strict_json
from trainer.reporting.timing import shares

SUMMARY = "summary.json"


def run_summary(trainer, status: str) -> dict:
    """Plain data: status (done, diverged, stopped, ...), steps, best val loss and its step, the
    final evaluation's metrics, tokens seen, milliseconds per phase, and the run's files."""
    state = trainer.state
    trainer.timer.lap("logging")
    trainer.timer.read()  # fold in the time since the last log step (the final evaluation, a stop)
    summary = {
        "status": status,
        "step": state.step,
        "max_iters": trainer.cfg.max_iters,
        # the checkpoint this command continued (None: it started fresh); the sweep table says resumed
        "resumed_from": str(trainer.files.resumed_from) if trainer.files.resumed_from is not None else None,
        "best_val_loss": state.best_val_loss,
        "best_step": state.best_step,
        "final": trainer.last_eval,
        "tokens_seen": state.tokens_seen,
        "time_ms": trainer.timer.total,
        "files": run_files(trainer),
    }
    if trainer.runtime.device.type == "cuda":  # the most this (rank 0's) device held at once, in bytes
        summary["peak_memory_bytes"] = torch.cuda.max_memory_allocated(trainer.runtime.device)
    return summary


def run_files(trainer) -> dict[str, str]:
    """The run's result files that exist: best.pt, the metrics, the curves."""
    logger = trainer.cfg.logger
    candidates = {
        "best": trainer.files.checkpoints.directory / BEST,
        "last": trainer.files.last_checkpoint,
        "metrics": trainer.files.run_dir / logger.jsonl.filename if logger.jsonl else None,
        "curves": trainer.files.run_dir / logger.plot.filename if logger.plot else None,
    }
    return {name: str(path) for name, path in candidates.items() if path is not None and Path(path).exists()}


def describe(summary: dict) -> str:
    """The summary as console lines."""
    seconds = sum(summary["time_ms"].values()) / 1000
    lines = [
        f"{summary['status']}: {summary['step']} of {summary['max_iters']} steps in {seconds:.1f} s, "
        f"{summary['tokens_seen']:,} tokens seen",
        f"  best val loss {summary['best_val_loss']:.4f} at step {summary['best_step']}",
    ]
    if summary["final"]:
        overall = {k: v for k, v in summary["final"].items() if "/stage_" not in k}
        lines.append("  final: " + ", ".join(f"{k} {v:.4f}" for k, v in overall.items()))
    lines.append("  time: " + shares(summary["time_ms"]))
    lines += [f"  {name + ':':<9}{path}" for name, path in summary["files"].items()]
    return "\n".join(lines)


def write_summary(run_dir: Path, summary: dict) -> None:
    staging = run_dir / f".{SUMMARY}.tmp"
    staging.write_text(strict_json.dumps(summary, indent=1) + "\n")
    os.replace(staging, run_dir / SUMMARY)
