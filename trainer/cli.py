"""`python -m trainer`: compose the config with Hydra, check it, build the Trainer, train.

Bad input ends with one line on stderr and exit code 2, before anything is written: before Hydra
creates a run folder, `preflight` composes and checks the config of every job the command would
run (each job of a sweep), so a bad value in job 3 stops the sweep before job 1 starts.
"""

import os
import re
import sys
from pathlib import Path

import hydra
from hydra import compose, initialize_config_dir
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra._internal.utils import get_args_parser
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException
from omegaconf import DictConfig, open_dict
from omegaconf.errors import OmegaConfBaseException
from rich.console import Console

from stability import TrainingDiverged
from trainer.build import build_trainer
from trainer.config import register_schemas
from trainer.contract import check, check_writable
from trainer.errors import ConfigError, UserError

EXIT_BAD_INPUT = 2
EXIT_DIVERGED = 3
LOG_WIDTH = 160
CONF_DIR = str(Path(__file__).resolve().parent.parent / "conf")


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="config")
def train(cfg: DictConfig) -> float:
    hydra_cfg = HydraConfig.get()
    run_dir = Path(hydra_cfg.runtime.output_dir)
    # A log file has no terminal width: give tables room instead of rich's default of 80 columns.
    console = Console(width=None if sys.stdout.isatty() else LOG_WIDTH)
    try:
        trainer = build_trainer(cfg, run_dir, console, hydra_cfg.overrides.task)
    except UserError as err:
        _remove_if_empty(run_dir)
        fail(str(err))
    console.print(f"run directory: {run_dir}", highlight=False)
    try:
        trainer.fit()
    except TrainingDiverged as err:
        print(f"error: training diverged: {err}", file=sys.stderr)
        sys.exit(EXIT_DIVERGED)
    return trainer.state.best_val_loss


def main() -> None:
    register_schemas()
    # Let composition errors reach us instead of Hydra's multi-line report, so they become one line.
    os.environ.setdefault("HYDRA_FULL_ERROR", "1")
    try:
        preflight(sys.argv[1:])
        train()
    except UserError as err:
        fail(str(err))
    except (HydraException, OmegaConfBaseException) as err:
        fail(one_line(err))


def preflight(argv: list[str]) -> None:
    """Compose and check the config of every job `argv` asks for; raise on the first bad one.

    Commands that only print (--help, --cfg, --info) are left to Hydra.
    """
    args = get_args_parser().parse_args(argv)
    if args.help or args.hydra_help or args.cfg or args.info or args.shell_completion:
        return
    jobs = sweep_jobs(args.overrides) if args.multirun else [args.overrides]
    with initialize_config_dir(version_base="1.3", config_dir=CONF_DIR, job_name="trainer"):
        for overrides in jobs:
            cfg = compose_job(overrides)
            output = cfg.hydra.sweep.dir if args.multirun else cfg.hydra.run.dir
            with open_dict(cfg):
                del cfg["hydra"]
            run = check(cfg)
            check_writable(Path(output), "hydra.sweep.dir" if args.multirun else "hydra.run.dir")
            check_writable(Path(run.data.cache_dir), "data.cache_dir")


def compose_job(overrides: list[str]) -> DictConfig:
    try:
        return compose(config_name="config", overrides=overrides, return_hydra_config=True)
    except (HydraException, OmegaConfBaseException, AssertionError) as err:
        # OmegaConf asserts when a key is set under a group that is null in this run
        raise (unset_group_error(overrides) or err) from None


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
    parsed = OverridesParser.create().parse_overrides(overrides)
    return [job for batch in BasicSweeper.split_arguments(parsed, max_batch_size=None) for job in batch]


def fail(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)
    sys.exit(EXIT_BAD_INPUT)


def one_line(err: Exception) -> str:
    """Hydra's and OmegaConf's multi-line messages, as one line that names the key."""
    text = f"{err} {err.__cause__ or ''}"
    first = str(err).splitlines()[0] if str(err) else type(err).__name__
    if missing := re.search(r"Could not find '([^']+)/([^']+)'", text):
        options = getattr(err, "options", None) or []
        return f"{missing.group(1)}: {missing.group(2)!r} is not an option; allowed: {', '.join(options)}"
    if unknown := re.search(r"Key '([^']+)' not in '(\w+)'", text):
        full_key = re.search(r"full_key: (\S+)", text)
        key = full_key.group(1) if full_key else unknown.group(1)
        return f"{key}: no such key in {unknown.group(2)}; allowed: {allowed_keys(err)}"
    if override := getattr(err, "override", None):  # the override grammar could not read it
        key = override.split("=", 1)[0]
        quoted = f"'{key}=\"...\"'"
        return f"{key}: cannot read {override!r} ({first}); allowed: a value, quoted if it holds '=': {quoted}"
    if merging := re.search(r"Error merging override ([^=\s]+)=", text):  # e.g. not one of an Enum's values
        cause = str(err.__cause__ or err).splitlines()[0]
        return f"{merging.group(1)}: {cause}"
    if absent := re.search(r"Could not override '([^']+)'", text):  # e.g. a default a stage entry leaves out
        key = absent.group(1)
        return f"{key}: not in the composed config (see --cfg job); allowed: +{key}=VALUE to add it"
    if deleted := re.search(r"Could not delete from config\. '?([\w./]+)", text):
        return f"{deleted.group(1)}: cannot be deleted; allowed: another option, e.g. {deleted.group(1)}=NAME"
    return " ".join(line.strip() for line in first.splitlines() if line.strip())


def allowed_keys(err: Exception) -> str:
    """The keys of the schema a failed override was aimed at, when OmegaConf says which it was."""
    node = getattr(err, "parent_node", None) or getattr(err.__cause__, "parent_node", None)
    if node is not None:
        try:
            return ", ".join(str(k) for k in node.keys())
        except OmegaConfBaseException:
            pass
    return "see `python -m trainer --cfg job`"


def _remove_if_empty(run_dir: Path) -> None:
    """Hydra creates the run directory before the job starts; a rejected job leaves none behind."""
    if run_dir.is_dir() and not any(run_dir.iterdir()):
        run_dir.rmdir()
