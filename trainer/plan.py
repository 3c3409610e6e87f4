"""The job plan: what one job of a command will do, decided once and used by both the pre-launch
check and the build (DESIGN "Validate once").

A plan holds the validated config, its record (the resolved config as plain data, saved in every
checkpoint), the run folder, the command-line overrides, and the resume decision: the checkpoint
the job continues (or, with eval_only, evaluates), or None for a fresh start.
"""

import json
from dataclasses import dataclass, field, replace
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from trainer.checkpoint import load_checkpoint
from trainer.config import Config
from trainer.contract import check
from trainer.reporting.summary import SUMMARY
from trainer.resume import check_restart, reconcile, resume_point


@dataclass(frozen=True)
class JobPlan:
    run: Config  # the validated config
    record: dict  # the resolved config as plain data
    run_dir: Path
    resume_from: Path | None = None  # the checkpoint this job continues; None: a fresh start
    overrides: list[str] = field(default_factory=list)  # as typed, for .hydra/overrides.yaml


def plan_job(cfg: DictConfig, run_dir: Path, overrides: list[str] = ()) -> JobPlan:
    """Validate a composed config (the one validation of the job) and decide where it resumes.

    Raises ConfigError (a bad value, a fresh run into a used folder, eval_only without a checkpoint)
    and CheckpointError (a resume checkpoint that cannot be read).
    """
    return plan_in_folder(check(cfg), config_record(cfg), run_dir, overrides)


def config_record(cfg: DictConfig) -> dict:
    """The resolved config as plain data: what .hydra/config.yaml and every checkpoint store."""
    return OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)


def plan_in_folder(run: Config, record: dict, run_dir: Path, overrides: list[str] = ()) -> JobPlan:
    """The plan of a validated config run in `run_dir`: where it resumes is decided there. (The
    pre-launch check validates a job once and decides its resume in each folder it may run in.)"""
    run_dir = Path(run_dir)
    return JobPlan(run, record, run_dir, resume_point(run, run.checkpoint.build(run_dir)), list(overrides))


def check_resume(plan: JobPlan) -> None:
    """Refuse now what building the plan would refuse about resuming: a checkpoint that cannot be
    read, a changed config, or (resume=auto over a run that left no checkpoint) a config other than
    that run's. Reads only the checkpoint's stored config (the file is mapped, not loaded)."""
    if plan.resume_from is not None:
        reconciled(plan, load_checkpoint(plan.resume_from, lazy=True))
    elif plan.run.resume == "auto":
        check_restart(plan.record, plan.run, plan.run_dir)


def reconciled(plan: JobPlan, payload: dict) -> tuple[JobPlan, list[str]]:
    """The plan of a run that continues the checkpoint `payload`: its run and record keep the
    schedule horizons of the run resumed. Also the lines that say what the resume changes, to print.

    Raises ConfigError for changes nobody asked for (trainer/resume.py).
    """
    reconciliation = reconcile(payload, plan.record, plan.run)
    if not reconciliation.horizons:
        return plan, reconciliation.lines
    run, record = reconciliation.kept_in(plan.run, plan.record)
    return replace(plan, run=run, record=record), reconciliation.lines


def finished_run(plan: JobPlan) -> dict | None:
    """The summary of the plan's run when resume=auto finds it finished: summary.json says done at
    max_iters, and the checkpoint it would resume is at max_iters with this config (what may change
    on a resume aside). None when there is something to train or evaluate. Reads the summary and the
    checkpoint's stored config only; raises ConfigError for a config the checkpoint's refuses."""
    run, summary_file = plan.run, plan.run_dir / SUMMARY
    if run.resume != "auto" or run.eval_only or not summary_file.is_file():
        return None
    summary = json.loads(summary_file.read_text())
    if summary.get("status") != "done" or summary.get("step") != run.max_iters or plan.resume_from is None:
        return None
    payload = load_checkpoint(plan.resume_from, lazy=True)
    if payload["state"]["step"] != run.max_iters:
        return None
    reconcile(payload, plan.record, run)
    return summary
