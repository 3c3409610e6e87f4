"""`python -m trainer`: compose the config with Hydra, check it, build the Trainer, train.

Bad input ends with one line on stderr and exit code 2, before anything is written: before Hydra
creates a run folder, `preflight` composes and checks the config of every job the command would
run (each job of a sweep), so a bad value in job 3 stops the sweep before job 1 starts. Hydra's
flags may stand anywhere among the overrides (the command line is read with argparse's
intermixed parsing, then handed to Hydra's own runner).
"""

import argparse
import copy
import os
import shutil
import signal
import sys
from pathlib import Path

from hydra import compose, initialize_config_dir, version
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra._internal.utils import _run_hydra, get_args_parser
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf, open_dict
from omegaconf.errors import OmegaConfBaseException
from rich.console import Console

from stability import TrainingDiverged
from trainer.build import build_trainer
from trainer.checkpoint import CheckpointWriteError
from trainer.config import register_schemas
from trainer.contract import check, check_writable
from trainer.errors import ConfigError, UserError
from trainer.hydra_errors import one_line
from trainer.loop import EVALUATIONS, StopRequested
from trainer.resume import check_resume
from trainer.summary import run_summary, write_summary

EXIT_BAD_INPUT = 2
EXIT_DIVERGED = 3
EXIT_WRITE_FAILED = 74  # EX_IOERR: the run folder could not be written (disk full, permission)
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as a shell reports it
EXIT_TERMINATED = 143  # 128 + SIGTERM; also after SIGUSR1
LOG_WIDTH = 160
CONF_DIR = str(Path(__file__).resolve().parent.parent / "conf")


# The jobs of this sweep whose training diverged: the sweep goes on, and ends with EXIT_DIVERGED.
_diverged_jobs: list[Path] = []
# The first folder of the run directory that did not exist before this command: a job rejected
# while it is built removes it again, so a rejected command leaves no empty outputs/ behind.
_created_by_this_run: Path | None = None


def train(cfg: DictConfig) -> float:
    """Hydra's task function: build the Trainer for the composed config and train."""
    hydra_cfg = HydraConfig.get()
    run_dir = Path(hydra_cfg.runtime.output_dir)
    # A log file has no terminal width: give tables room instead of rich's default of 80 columns.
    console = Console(width=None if sys.stdout.isatty() else LOG_WIDTH)
    try:
        trainer = build_trainer(cfg, run_dir, console, hydra_cfg.overrides.task)
    except UserError as err:
        _remove_if_empty(_created_by_this_run or run_dir)
        fail(str(err))
    if trainer.cfg.eval_only:
        metrics = trainer.evaluate_only()
        console.print(f"evaluated {trainer.resumed_from}; metrics appended to {run_dir / EVALUATIONS}", highlight=False)
        return metrics["val/loss"]
    console.print(f"run directory: {run_dir}", highlight=False)
    stop_on_signals(trainer)
    status, code = fit(trainer)
    try:
        write_summary(run_dir, run_summary(trainer, status))
    except OSError:  # the disk that failed the checkpoint may fail this too; the exit code says it
        pass
    if code == EXIT_DIVERGED and hydra_cfg.mode == RunMode.MULTIRUN:
        _diverged_jobs.append(run_dir)  # the other jobs of the sweep still run
        return None
    if code is not None:
        sys.exit(code)
    return trainer.state.best_val_loss


def fit(trainer) -> tuple[str, int | None]:
    """Train; returns the run's status and the exit code it ends with (None: success). Each way of
    ending early prints one line on stderr."""
    try:
        trainer.fit()
    except TrainingDiverged as err:
        print(f"error: training diverged: {err}", file=sys.stderr)
        return "diverged", EXIT_DIVERGED
    except CheckpointWriteError as err:
        print(f"error: {err}", file=sys.stderr)
        return "checkpoint write failed", EXIT_WRITE_FAILED
    except StopRequested as stop:
        name = signal.Signals(stop.signal_number).name
        saved = f"checkpoint {stop.checkpoint}" if stop.checkpoint else "nothing learnt yet, no checkpoint"
        print(f"stopped by {name} at step {stop.step}: {saved}; continue with resume=auto", file=sys.stderr)
        return f"stopped by {name}", EXIT_INTERRUPTED if stop.signal_number == signal.SIGINT else EXIT_TERMINATED
    return "done", None


def stop_on_signals(trainer) -> None:
    """SIGTERM, SIGUSR1 (SLURM's warning before the end of a job) and SIGINT finish the current step,
    write a checkpoint and stop; a second SIGINT stops at once, without a checkpoint."""

    def request_stop(signal_number, frame):
        if signal_number == signal.SIGINT and trainer.stop_signal is not None:
            print("interrupted twice: stopped without a checkpoint", file=sys.stderr)
            sys.exit(EXIT_INTERRUPTED)
        trainer.request_stop(signal_number)

    for signal_number in (signal.SIGTERM, signal.SIGUSR1, signal.SIGINT):
        signal.signal(signal_number, request_stop)


def main() -> None:
    register_schemas()
    version.setbase("1.3")
    # Let composition errors reach us instead of Hydra's multi-line report, so they become one line.
    os.environ.setdefault("HYDRA_FULL_ERROR", "1")
    parser = command_line_parser()
    try:
        args = parser.parse_intermixed_args(sys.argv[1:])
        preflight(args)
        _diverged_jobs.clear()
        _run_hydra(args=args, args_parser=parser, task_function=train, config_path=CONF_DIR, config_name="config")
    except UserError as err:
        fail(str(err))
    except (HydraException, OmegaConfBaseException) as err:
        fail(one_line(err))
    if _diverged_jobs:
        folders = ", ".join(str(folder) for folder in _diverged_jobs)
        print(f"error: {len(_diverged_jobs)} job(s) of the sweep diverged: {folders}", file=sys.stderr)
        sys.exit(EXIT_DIVERGED)


def command_line_parser() -> argparse.ArgumentParser:
    """Hydra's own parser, whose usage errors become one line instead of the usage block."""
    parser = get_args_parser()

    def one_line_error(message: str):
        raise ConfigError("command line", message, "python -m trainer [hydra flags] [key=value ...]")

    parser.error = one_line_error
    return parser


def preflight(args: argparse.Namespace) -> None:
    """Compose and check the config of every job the command asks for; raise on the first bad one.

    Commands that only print (--help, --cfg, --info) are left to Hydra.
    """
    global _created_by_this_run
    _created_by_this_run = None
    actions = [name for name in ("multirun", "cfg", "info", "shell_completion") if getattr(args, name)]
    if len(actions) > 1:
        raise ConfigError("command line", f"--{' and --'.join(actions)} together", "one of --multirun, --cfg, --info")
    if args.hydra_help:  # Hydra's own help composes only its own config: the run's overrides do not apply
        args.overrides = [o for o in args.overrides if o.lstrip("+~").startswith("hydra")]
    if args.help or args.hydra_help or args.cfg or args.info or args.shell_completion:
        return
    refuse_removed_groups(args.overrides)
    key = "hydra.sweep.dir" if args.multirun else "hydra.run.dir"
    refused = []  # (job number, its run folder, the error) of the jobs whose resume is refused
    with initialize_config_dir(version_base="1.3", config_dir=CONF_DIR, job_name="trainer"):
        jobs = sweep_jobs(args.overrides) if args.multirun else [args.overrides]
        if not jobs:
            raise ConfigError("--multirun", "the sweep has no job", "overrides whose sweeps hold at least one value")
        for number, overrides in enumerate(jobs):
            cfg = compose_job(overrides)
            job = copy.deepcopy(cfg)
            with open_dict(job):
                del job["hydra"]
            run = check(job)
            output = OmegaConf.select(cfg, key)
            check_writable(output, key)
            check_writable(run.data.cache_dir, "data.cache_dir")
            run_dir = job_folder(cfg, number) if args.multirun else Path(output)
            check_writable(run_dir, "hydra.sweep.subdir" if args.multirun else key)
            try:
                check_resume(run, OmegaConf.to_container(job, resolve=True, enum_to_str=True), run_dir)
            except UserError as err:
                refused.append((number, run_dir, err))
    refuse_resumes(refused, args.multirun)
    _created_by_this_run = first_missing_folder(Path(output))


def job_folder(cfg: DictConfig, number: int) -> Path:
    """The run folder of job `number` of a sweep, as Hydra's launcher will name it."""
    with open_dict(cfg):
        cfg.hydra.job.num = cfg.hydra.job.id = number
    return Path(cfg.hydra.sweep.dir) / str(cfg.hydra.sweep.subdir)


def refuse_resumes(refused: list[tuple[int, Path, UserError]], multirun: bool) -> None:
    """One error for all the jobs whose resume is refused: a re-launched sweep whose job numbers now
    mean other values is refused job by job, before any job runs."""
    if not refused:
        return
    _, _, first = refused[0]
    if not multirun:
        raise first
    problems = "; ".join(f"job {number} ({folder}): {err.problem}" for number, folder, err in refused)
    raise type(first)(first.key, problems, first.allowed)


def refuse_removed_groups(overrides: list[str]) -> None:
    """`~group` would leave a required part of the config to its bare schema defaults."""
    optional = ("masking", "stages", "experiment", "debug")
    for override in overrides:
        key = override.split("=", 1)[0]
        if key.startswith("~") and key[1:] not in optional:
            raise ConfigError(key[1:], "cannot be removed", f"another option or value, e.g. {key[1:]}=...")


def first_missing_folder(path: Path) -> Path | None:
    path = path.expanduser().absolute()
    missing = [p for p in (path, *path.parents) if not p.exists()]
    return missing[-1] if missing else None


def compose_job(overrides: list[str]) -> DictConfig:
    try:
        return compose(config_name="config", overrides=overrides, return_hydra_config=True)
    except (HydraException, OmegaConfBaseException, AssertionError) as err:
        # OmegaConf asserts when a key is set under a group that is null in this run
        problem = unset_group_error(overrides)
        if problem is None:
            raise
        raise problem from err


def unset_group_error(overrides: list[str]) -> UserError | None:
    """The error for an override of a key in a group that this run leaves unset (null), such as
    `masking.target_masked_ratio=0.3` while the stages carry their own masking."""
    keys = [o.split("=", 1)[0].lstrip("+~") for o in overrides]
    choices = [o for o, key in zip(overrides, keys) if "." not in key]
    try:
        cfg = compose(config_name="config", overrides=choices)
    except (HydraException, OmegaConfBaseException):
        return None
    for key in keys:
        group = key.split(".", 1)[0]
        if "." in key and group in cfg and cfg[group] is None:
            return ConfigError(
                key,
                f"sets a key of {group}, and no {group} is chosen in this run",
                f"{group}=<option> first (conf/{group}/)",
            )
    return None


def sweep_jobs(overrides: list[str]) -> list[list[str]]:
    """The overrides of each job of a basic sweep (`a=1,2 b=x,y` is four jobs), in launch order."""
    # the config loader lets glob(...) sweeps list a group's options
    parsed = OverridesParser.create(GlobalHydra.instance().config_loader()).parse_overrides(overrides)
    return [job for batch in BasicSweeper.split_arguments(parsed, max_batch_size=None) for job in batch]


def fail(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)
    sys.exit(EXIT_BAD_INPUT)


def _remove_if_empty(folder: Path) -> None:
    """Hydra creates the run directory (and its parents) before the job starts; a rejected job
    leaves none behind. Only folders that hold nothing but empty folders are removed."""
    if folder.is_dir() and not any(p.is_file() for p in folder.rglob("*")):
        shutil.rmtree(folder)
