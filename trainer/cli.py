"""`python -m trainer`: compose the config with Hydra, build the Trainer, train.

Bad input ends with one line on stderr and exit code 2, before anything is written: Hydra's own
composition errors (unknown option, misspelt key) are caught around Hydra, ours inside the job.
"""

import os
import re
import sys
from dataclasses import fields, is_dataclass
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.errors import HydraException
from omegaconf import DictConfig
from omegaconf.errors import OmegaConfBaseException
from rich.console import Console

from stability import TrainingDiverged
from trainer import config as config_schemas
from trainer.build import build_trainer
from trainer.config import register_schemas
from trainer.errors import UserError

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
    sys.argv[1:] = with_implied_overrides(sys.argv[1:])
    register_schemas()
    # Let composition errors reach us instead of Hydra's multi-line report, so they become one line.
    os.environ.setdefault("HYDRA_FULL_ERROR", "1")
    try:
        train()
    except (HydraException, OmegaConfBaseException) as err:
        fail(one_line(err))


def with_implied_overrides(args: list[str]) -> list[str]:
    """`masking=X` asks for that strategy: without a `stages=` choice it implies `stages=single`,
    so the default curriculum never silently replaces the masking a user named."""
    groups = {arg.split("=", 1)[0].lstrip("+~") for arg in args if "=" in arg and not arg.startswith("-")}
    if "masking" in groups and "stages" not in groups:
        return [*args, "stages=single"]
    return args


def fail(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)
    sys.exit(EXIT_BAD_INPUT)


def one_line(err: Exception) -> str:
    """Hydra's and OmegaConf's multi-line messages, shortened to their first sentence with options."""
    text = str(err)
    options = getattr(err, "options", None)
    missing = re.search(r"Could not find '([^']+)/([^']+)'", text)
    if missing and options:
        return f"{missing.group(1)}={missing.group(2)} is not an option; allowed: {', '.join(options)}"
    unknown = re.search(r"Key '([^']+)' not in '(\w+)'", f"{text} {err.__cause__}")
    if unknown and is_dataclass(schema := getattr(config_schemas, unknown.group(2), None)):
        keys = ", ".join(f.name for f in fields(schema))
        overridden = re.search(r"Could not override '([^']+)'", text)
        key = overridden.group(1) if overridden else unknown.group(1)
        return f"{key}: no such key; allowed: {keys}"
    cause = err.__cause__
    if cause is not None and isinstance(cause, OmegaConfBaseException):
        text = f"{text.splitlines()[0]} {str(cause).splitlines()[0]}"
    return " ".join(
        line.strip()
        for line in text.splitlines()
        if line.strip() and not line.startswith(("full_key", "object_type", "reference_type"))
    )


def _remove_if_empty(run_dir: Path) -> None:
    """Hydra creates the run directory before the job starts; a rejected job leaves none behind."""
    if run_dir.is_dir() and not any(run_dir.iterdir()):
        run_dir.rmdir()
