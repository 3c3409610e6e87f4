"""`python -m trainer`: compose the config with Hydra, check it, build the Trainer, train.

Bad input ends with one line on stderr and exit code 2, before anything is written: before Hydra
creates a run folder, `preflight` composes and checks the config of every job the command would
run (each job of a sweep), so a bad value in job 3 stops the sweep before job 1 starts. Hydra's
flags may stand anywhere among the overrides (the command line is read with argparse's
intermixed parsing, then handed to Hydra's own runner).

Under torchrun every process runs this command: each checks the config (a rejected one ends every
process with exit code 2, rank 0 printing the line), then they join the process group; the run
folder rank 0 decided is everyone's, and only rank 0 writes and prints.
"""

import argparse
import os
import shutil
import signal
import sys
from dataclasses import dataclass, field
from pathlib import Path

from hydra import version
from hydra._internal.utils import _run_hydra, get_args_parser
from hydra.core.hydra_config import HydraConfig
from hydra.errors import HydraException
from hydra.types import RunMode
from omegaconf import DictConfig
from omegaconf.errors import OmegaConfBaseException
from rich.console import Console

from stability import TrainingDiverged
from trainer.build import build_trainer
from trainer.checkpoint import CheckpointWriteError
from trainer.cli.help import register_help
from trainer.cli.hydra_errors import one_line
from trainer.cli.preflight import CONF_DIR, job_plan, preflight, quote_text_values
from trainer.cli.run_folder import claim_run_folder, release_run_folder, releases_run_folder
from trainer.cli.signals import (
    EXIT_INTERRUPTED,
    STOP_SIGNALS,
    exit_code,
    job_without_result,
    stopped_before_training,
    submitit_requeue,
)
from trainer.config import register_schemas
from trainer.distributed import ONE_PROCESS, Distributed, rank_from_env
from trainer.errors import ConfigError, UserError
from trainer.interrupt import stop_requested
from trainer.plan import JobPlan, finished_run
from trainer.reporting.summary import describe, run_summary, write_summary
from trainer.run_files import EVALUATIONS
from trainer.step import StopRequested

TEXT_KEYS = ("sample.prompt", "sample.template")  # taken as typed (see quote_text_values)
EXIT_BAD_INPUT = 2
EXIT_DIVERGED = 3
EXIT_WRITE_FAILED = 74  # EX_IOERR: the run folder could not be written (disk full, permission)
LOG_WIDTH = 160


@dataclass
class Command:
    """What the command keeps from its start for its jobs (Hydra calls the task function with the
    config alone, once per job of a sweep run in this process)."""

    dist: Distributed = ONE_PROCESS  # this process among torchrun's; joined once the config is checked
    plans: dict[Path, JobPlan] = field(default_factory=dict)  # the pre-launch check's, by run folder
    diverged_jobs: list[Path] = field(default_factory=list)  # the sweep goes on, and ends with EXIT_DIVERGED
    # the first folder of the run directory that did not exist before this command: a job rejected
    # while it is built removes it again, so a rejected command leaves no empty outputs/ behind
    created_by_this_run: Path | None = None
    # the run folder Hydra made for the job being built (None once training started, or when it held
    # a run before): a stop signal before training removes it, so the same command can be re-run
    job_folder: Path | None = None
    # a stop signal before training: the handler only notes it (raising from a handler could land
    # inside an import or a file write), and the command checks it at safe points
    startup_signal: int | None = None
    # in a job submitit runs: its signal and the handler that requeues the job once the trainer has
    # stopped on that signal (a SIGTERM, which may be scancel, is not handed over)
    requeue: tuple | None = None


_command = Command()


def stop_at_startup(signal_number, frame) -> None:
    if _command.startup_signal is not None and signal_number == signal.SIGINT:
        print("interrupted twice: stopped at once", file=sys.stderr, flush=True)
        os._exit(EXIT_INTERRUPTED)
    _command.startup_signal = _command.startup_signal or signal_number
    stop_requested(check_startup_signal)  # at once while a corpus is tokenised, else at the next check


def check_startup_signal() -> None:
    """End the command here if a stop signal came while it was starting."""
    if _command.startup_signal is not None:
        stopped_at_startup(_command.startup_signal)


@releases_run_folder
def train(cfg: DictConfig) -> float | None:
    """Hydra's task function: claim the run folder, build the Trainer for the composed config and train."""
    hydra_cfg = HydraConfig.get()
    run_dir = shared_run_folder(Path(hydra_cfg.runtime.output_dir))
    _command.requeue = submitit_requeue()  # before the trainer's handlers replace submitit's
    for signal_number in STOP_SIGNALS:  # not the handlers of the previous job of a sweep
        signal.signal(signal_number, stop_at_startup)
    console = make_console()
    try:  # the folder is claimed before anything is written there, and the resume decided in it
        _command.job_folder = run_dir if claim_run_folder(run_dir, _command.dist) else None
        check_startup_signal()
        plan = job_plan(_command.plans, cfg, run_dir, list(hydra_cfg.overrides.task))
        if (done := already_done(plan, console)) is not None:
            return done["best_val_loss"]  # what Optuna would have got from the run
        trainer = build_trainer(plan, console, _command.dist)
    except UserError as err:
        if _command.dist.is_main:
            release_run_folder()
            _remove_if_empty(_command.created_by_this_run or run_dir)
        fail(str(err))
    if trainer.cfg.eval_only:
        metrics = trainer.evaluate_only()
        console.print(
            f"evaluated {trainer.files.resumed_from}; metrics appended to {run_dir / EVALUATIONS}", highlight=False
        )
        return metrics["val/loss"]
    check_startup_signal()  # after the build, before anything is trained
    console.print(f"run directory: {run_dir}", highlight=False)
    stop_on_signals(trainer)
    _command.job_folder = None
    status, code = fit(trainer)
    if _command.dist.is_main:
        report_end(trainer, status, code, console, run_dir)
    if code == EXIT_DIVERGED and hydra_cfg.mode == RunMode.MULTIRUN:
        _command.diverged_jobs.append(run_dir)  # the other jobs of the sweep still run
        return None
    if code is not None:
        hand_over_to_submitit(trainer.stop_signal)
        sys.exit(code)
    return trainer.state.best_val_loss


def shared_run_folder(own: Path) -> Path:
    """Rank 0's run folder, on every rank: the default run_name is the start time and the process id,
    which differ between ranks. The empty folders Hydra made for this rank alone are removed."""
    shared = Path(_command.dist.share(str(own)))
    folder = own
    while folder != shared and folder not in shared.parents and folder.is_dir() and not any(folder.iterdir()):
        folder.rmdir()
        folder = folder.parent
    return shared


def make_console() -> Console:
    """Rank 0's console; the other ranks print nothing."""
    if not _command.dist.is_main:
        return Console(file=open(os.devnull, "w"))
    # A log file has no terminal width: give tables room instead of rich's default of 80 columns.
    return Console(width=None if sys.stdout.isatty() else LOG_WIDTH)


def report_end(trainer, status: str, code: int | None, console: Console, run_dir: Path) -> None:
    """summary.json, and the summary on the console when the console logger does not print it."""
    summary = run_summary(trainer, status)
    if code is not None:  # a finished run's summary is printed by the console logger
        console.print(describe(summary), highlight=False, soft_wrap=True)
    try:
        write_summary(run_dir, summary)
    except OSError:  # the disk that failed the checkpoint may fail this too; the exit code says it
        pass


def say(message: str) -> None:
    """One line on stderr, from rank 0 only (every rank ends the same way)."""
    if rank_from_env() == 0:
        print(message, file=sys.stderr)


def already_done(plan: JobPlan, console: Console) -> dict | None:
    """resume=auto of a finished run (a job of a re-launched sweep): one line, nothing written; the
    run's summary. None when there is something to train."""
    done = finished_run(plan)
    if done is not None:
        console.print(
            f"already done: {plan.run_dir} ({done['step']} steps, best val loss "
            f"{done['best_val_loss']:.4f} at step {done['best_step']}); nothing to train",
            highlight=False,
        )
    return done


def fit(trainer) -> tuple[str, int | None]:
    """Train; returns the run's status and the exit code it ends with (None: success). Each way of
    ending early prints one line on stderr."""
    try:
        trainer.fit()
    except TrainingDiverged as err:
        say(f"error: training diverged: {err}")
        return "diverged", EXIT_DIVERGED
    except CheckpointWriteError as err:
        say(f"error: {err}")
        return "checkpoint write failed", EXIT_WRITE_FAILED
    except StopRequested as stop:
        name = signal.Signals(stop.signal_number).name
        saved = f"checkpoint {stop.checkpoint}" if stop.checkpoint else "nothing learnt yet, no checkpoint"
        say(f"stopped by {name} at step {stop.step}: {saved}; continue with resume=auto")
        return f"stopped by {name}", exit_code(stop.signal_number)
    return "done", None


def hand_over_to_submitit(signal_number: int | None) -> None:
    """After a stop by submitit's signal, in a job it runs: let it requeue the job (it exits)."""
    if _command.requeue is not None and signal_number == _command.requeue[0]:
        _command.requeue[1](signal_number, None)


def stop_on_signals(trainer) -> None:
    """SIGTERM, SIGUSR1 and SIGUSR2 (SLURM's warnings before the end of a job) and SIGINT finish the current step,
    write a checkpoint and stop; a second SIGINT stops at once, without a checkpoint."""

    def request_stop(signal_number, frame):
        if signal_number == signal.SIGINT and trainer.stop_signal is not None:
            say("interrupted twice: stopped without a checkpoint")
            sys.exit(EXIT_INTERRUPTED)
        trainer.request_stop(signal_number)

    for signal_number in STOP_SIGNALS:
        signal.signal(signal_number, request_stop)


def main() -> None:
    register_schemas()
    register_help(CONF_DIR)
    version.setbase("1.3")
    # Let composition errors reach us instead of Hydra's multi-line report, so they become one line.
    os.environ.setdefault("HYDRA_FULL_ERROR", "1")
    parser = command_line_parser()
    for signal_number in STOP_SIGNALS:
        signal.signal(signal_number, stop_at_startup)
    try:
        args = parser.parse_intermixed_args(sys.argv[1:])
        if not args.multirun:  # in a sweep, a comma separates the prompts to sweep over
            args.overrides = quote_text_values(args.overrides, TEXT_KEYS)
        checked = preflight(args)
        _command.created_by_this_run, _command.plans = checked.created_folder, checked.plans
        check_startup_signal()
        _command.dist = Distributed.start()  # torchrun's processes meet here, each having checked the config
        _command.dist.barrier()  # nobody writes before every rank's checks have read the run folder
        _command.diverged_jobs.clear()
        _run_hydra(args=args, args_parser=parser, task_function=train, config_path=CONF_DIR, config_name="config")
    except UserError as err:
        fail(str(err))
    except (HydraException, OmegaConfBaseException) as err:
        fail(one_line(err))
    except Exception as err:
        if not type(err).__module__.startswith("submitit."):
            raise  # a bug: its traceback
        job_without_result(err)
    finally:
        _command.dist.stop()
    if _command.diverged_jobs:
        folders = ", ".join(str(folder) for folder in _command.diverged_jobs)
        say(f"error: {len(_command.diverged_jobs)} job(s) of the sweep diverged: {folders}")
        sys.exit(EXIT_DIVERGED)


def command_line_parser(usage: str = "python -m trainer [hydra flags] [key=value ...]") -> argparse.ArgumentParser:
    """Hydra's own parser, whose usage errors become one line instead of the usage block."""
    parser = get_args_parser()

    def one_line_error(message: str):
        raise ConfigError("command line", message, usage)

    parser.error = one_line_error
    return parser


def stopped_at_startup(signal_number: int) -> None:
    """One line, the folders this command made for the job removed, the signal's exit code."""
    if _command.job_folder is not None:
        shutil.rmtree(_command.job_folder, ignore_errors=True)
    if _command.created_by_this_run is not None and _command.dist.is_main:
        _remove_if_empty(_command.created_by_this_run)
    say(stopped_before_training(signal_number))
    hand_over_to_submitit(signal_number)
    sys.exit(exit_code(signal_number))


def fail(message: str) -> None:
    say(f"error: {message}")
    sys.exit(EXIT_BAD_INPUT)


def _remove_if_empty(folder: Path) -> None:
    """Hydra creates the run directory (and its parents) before the job starts; a rejected job
    leaves none behind. Only folders that hold nothing but empty folders are removed."""
    if folder.is_dir() and not any(p.is_file() for p in folder.rglob("*")):
        shutil.rmtree(folder)
