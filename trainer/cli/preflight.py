"""Before Hydra creates a run folder: compose and check the config of every job a command would run.

Each job of a sweep is composed and checked (values, the checkpoint to resume and what may change
on resume, writable folders), so a bad value in job 3 stops the sweep before job 1 starts and a
rejected command leaves nothing behind. What it finds is the job's plan (trainer/plan.py), which the
job takes when Hydra runs it (`job_plan`): a job's config is validated once.
"""

import argparse
import contextlib
import copy
import os
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf, open_dict
from omegaconf.errors import OmegaConfBaseException

from trainer.cli.plugins import check_launcher, is_optuna_sweep, optuna_checks
from trainer.cli.run_overrides import with_run_overrides
from trainer.config import Config
from trainer.contract import check, check_writable
from trainer.corpus import PreparedCorpus, prepare
from trainer.errors import ConfigError, UserError
from trainer.plan import JobPlan, check_resume, config_record, plan_in_folder, plan_job
from trainer.run_lock import refuse_if_in_use

CONF_DIR = str(Path(__file__).resolve().parents[2] / "conf")


@dataclass
class Checked:
    """What the pre-launch check leaves the command: the first folder of the run (or sweep) folder
    that does not exist yet (None: all do), and the plan of each job it checked, by run folder, which
    the job takes instead of validating its config again."""

    created_folder: Path | None = None
    plans: dict[Path, JobPlan] = field(default_factory=dict)


def preflight(args: argparse.Namespace) -> Checked:
    """Compose, check and plan every job the command asks for; raise on the first bad one.

    Commands that only print (--help, --cfg, --info) are left to Hydra.
    """
    actions = [name for name in ("multirun", "cfg", "info", "shell_completion") if getattr(args, name)]
    if len(actions) > 1:
        raise ConfigError("command line", f"--{' and --'.join(actions)} together", "one of --multirun, --cfg, --info")
    if args.hydra_help:  # Hydra's own help composes only its own config: the run's overrides do not apply
        args.overrides = [o for o in args.overrides if o.lstrip("+~").startswith("hydra")]
    if args.help or args.hydra_help or args.cfg or args.info or args.shell_completion:
        return Checked()
    refuse_group_misuse(args.overrides)
    if not args.multirun:  # Hydra then composes the same job as this check does
        args.overrides, taken = with_run_overrides(args.overrides)
        if taken:
            print(taken, flush=True)
    key = "hydra.sweep.dir" if args.multirun else "hydra.run.dir"
    plans, refused, corpora = [], [], {}  # refused: (job number, its run folder, the error) of each refused resume
    with staged(corpora), initialize_config_dir(version_base="1.3", config_dir=CONF_DIR, job_name="trainer"):
        jobs, searched = planned_jobs(args)
        for number, overrides in enumerate(jobs):
            cfg = compose_job(overrides)
            run, record = checked_job(cfg, args.multirun, key, corpora)
            output = Path(OmegaConf.select(cfg, key))
            for job_number, run_dir in job_folders(cfg, run, number, searched, args.multirun, key):
                try:
                    refuse_if_in_use(Path(run_dir), key)  # a live run's folder, whatever it holds
                    plan = plan_in_folder(run, record, Path(os.path.abspath(run_dir)), list(cfg.hydra.overrides.task))
                    check_resume(plan)
                except UserError as err:
                    refused.append((job_number, run_dir, err))
                else:
                    plans.append(plan)
        refuse_resumes(refused, args.multirun)
    # an Optuna trial's values are drawn when it runs: the configs checked for it are not its own
    return Checked(first_missing_folder(output), {} if searched else plans_by_folder(plans))


@contextlib.contextmanager
def staged(corpora: dict[tuple, PreparedCorpus]):
    """The corpora a sweep's check prepared: kept in the cache when every job is accepted, else dropped."""
    try:
        yield
    except BaseException:
        for corpus in corpora.values():
            corpus.discard()
        raise
    for corpus in corpora.values():
        corpus.save()


def checked_job(cfg: DictConfig, multirun: bool, key: str, corpora: dict[tuple, PreparedCorpus]) -> tuple[Config, dict]:
    """The validated config of a composed job (the one validation of the job) and its record; the
    folders it writes must be writable, and a sweep's launcher settings acceptable."""
    if multirun:
        check_launcher(cfg)
    job = copy.deepcopy(cfg)
    with open_dict(job):
        del job["hydra"]
    run = check(job)
    check_writable(OmegaConf.select(cfg, key), key)
    check_writable(run.data.cache_dir, "data.cache_dir")
    if multirun:  # a single run's corpus is checked as it is built, before anything is written
        check_corpus(run, corpora)
    return run, config_record(job)


def check_corpus(run: Config, checked: dict[tuple, PreparedCorpus]) -> None:
    """A sweep's job's corpus: it exists, is readable and holds windows in both splits (DataError),
    checked before the first job starts. `checked` holds the corpora checked already (the jobs that
    share one check it once); a corpus prepared here stays staged until every job is accepted."""
    key = (str(run.data), str(run.tokenizer), run.window_length)
    if key not in checked:
        checked[key] = prepare(run.data, run.tokenizer)
        for split in ("train", "val"):
            checked[key].windows(split, run.window_length, run.data)


def job_folders(cfg: DictConfig, run: Config, number: int, searched: bool, multirun: bool, key: str):
    """(job number, run folder) of each folder job `number` may run in: its own (a sweep's, checked
    writable; a single run's is `key`, checked with the config); for the checks of an Optuna search
    space, the trials' folders, checked once (see trial_numbers)."""
    if not multirun:
        return [(number, Path(OmegaConf.select(cfg, key)))]
    check_writable(job_folder(cfg, 0 if searched else number), "hydra.sweep.subdir")
    numbers = (trial_numbers(cfg, run) if number == 0 else []) if searched else [number]
    return [(job_number, job_folder(cfg, job_number)) for job_number in numbers]


def plans_by_folder(plans: list[JobPlan]) -> dict[Path, JobPlan]:
    """The plans to keep for the jobs: not those of a folder several jobs share (a later job's resume
    depends on what the earlier ones write there)."""
    folders = Counter(plan.run_dir for plan in plans)
    return {plan.run_dir: plan for plan in plans if folders[plan.run_dir] == 1}


def job_plan(plans: dict[Path, JobPlan], cfg: DictConfig, run_dir: Path, overrides: list[str]) -> JobPlan:
    """The plan `preflight` made for the job Hydra now runs in `run_dir` (taken: a plan serves one
    job), its resume decided again in the folder the job has now claimed (another run may have used
    it since the check). A job it could not plan is planned here, once: one run in another process
    (joblib, submitit), an Optuna trial, or one whose config is not the one checked."""
    plan = plans.pop(run_dir, None)
    if plan is not None and plan.overrides == overrides and plan.record == config_record(cfg):
        return plan_in_folder(plan.run, plan.record, run_dir, plan.overrides)
    return plan_job(cfg, run_dir, overrides)


def trial_numbers(cfg: DictConfig, run) -> list[int]:
    """The job numbers of an Optuna sweep's trials whose folders a fresh sweep (resume=none) must
    find unused; none for resume=auto, which continues or skips each trial in its own folder."""
    return list(range(cfg.hydra.sweeper.n_trials)) if run.resume == "none" else []


def planned_jobs(args: argparse.Namespace) -> tuple[list[list[str]], bool]:
    """The overrides of each config to check, and whether they come from an Optuna search space
    (the base config and each parameter at its bounds) rather than from the jobs of the sweep."""
    if not args.multirun:
        return [args.overrides], False
    parser = OverridesParser.create(GlobalHydra.instance().config_loader())
    parsed = parser.parse_overrides(args.overrides)
    plain = [override for override, p in zip(args.overrides, parsed) if not p.is_sweep_override()]
    try:
        base = compose_job(plain)
    except (HydraException, OmegaConfBaseException, UserError):
        base = None  # a sweep whose jobs compose only with their values: each job's error will tell
    if base is not None and is_optuna_sweep(base):
        return optuna_checks(base, plain, args.overrides), True
    jobs = sweep_jobs(args.overrides)
    if not jobs:
        raise ConfigError("--multirun", "the sweep has no job", "overrides whose sweeps hold at least one value")
    return jobs, False


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


GROUPS = sorted(p.name for p in Path(CONF_DIR).iterdir() if p.is_dir())
OPTIONAL_GROUPS = ("masking", "stages", "experiment", "debug")
LIST_GROUPS = ("logger",)


def refuse_group_misuse(overrides: list[str]) -> None:
    """What Hydra would take badly or silently: `~group` of a required group (its bare schema
    defaults would remain), `group=null` (not an option), and a list of options for a group that
    takes one (Hydra would merge them)."""
    for override in overrides:
        key, _, value = override.partition("=")
        group = key.lstrip("+~")
        if group not in GROUPS:
            continue
        options = f"an option of conf/{group}/" + (f", or ~{group} for none" if group in OPTIONAL_GROUPS else "")
        if key.startswith("~") and group not in OPTIONAL_GROUPS:
            raise ConfigError(group, "cannot be removed", f"another option or value, e.g. {group}=...")
        if value.strip() == "null":
            raise ConfigError(group, "null is not an option", options)
        if value.strip().startswith("[") and group not in LIST_GROUPS:
            raise ConfigError(group, f"{value} lists several options, and {group} takes one option", options)


def quote_text_values(overrides: list[str], keys: tuple[str, ...]) -> list[str]:
    """`key=value` of a text key (a prompt, a template) keeps the text as typed: the value is quoted
    for Hydra's override grammar, which would read `1_2` as the number 12, `a, b` as a sweep, and
    refuse `é`. A value already in quotes, or null, is left as it is."""
    return [_quoted(override) if override.split("=", 1)[0].lstrip("+") in keys else override for override in overrides]


def _quoted(override: str) -> str:
    key, _, value = override.partition("=")
    if value[:1] in ("'", '"') or value == "null":
        return override
    # within quotes, Hydra reads \' as a quote and \\ before a quote (or the closing one) as a backslash
    escaped = re.sub(r"(\\*)'", lambda m: m.group(1) * 2 + "\\'", value)
    escaped = re.sub(r"(\\+)$", lambda m: m.group(1) * 2, escaped)
    return f"{key}='{escaped}'"


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
    """The error for an override of a key below a node this run leaves unset (null), such as
    `masking.target_masked_ratio=0.3` while the stages carry their own masking, or
    `logger.wandb.mode=offline` while wandb is not among the loggers."""
    keys = [o.split("=", 1)[0].lstrip("+~") for o in overrides]
    choices = [o for o, key in zip(overrides, keys) if "." not in key]
    try:
        cfg = compose(config_name="config", overrides=choices)
    except (HydraException, OmegaConfBaseException):
        return None
    for key in keys:
        parts = key.split(".")
        for depth in range(1, len(parts)):
            node = ".".join(parts[:depth])
            if OmegaConf.select(cfg, node, default="absent") is None:
                return ConfigError(key, f"sets a key of {node}, and no {node} is chosen in this run", _choose(node))
    return None


def _choose(node: str) -> str:
    """How to choose what a null node stands for."""
    group, _, option = node.partition(".")
    if group in LIST_GROUPS:
        return f"{group}=[..., {option}] to add it"
    return f"{group}=<option> first (conf/{group}/)"


def sweep_jobs(overrides: list[str]) -> list[list[str]]:
    """The overrides of each job of a basic sweep (`a=1,2 b=x,y` is four jobs), in launch order."""
    # the config loader lets glob(...) sweeps list a group's options
    parsed = OverridesParser.create(GlobalHydra.instance().config_loader()).parse_overrides(overrides)
    return [job for batch in BasicSweeper.split_arguments(parsed, max_batch_size=None) for job in batch]
