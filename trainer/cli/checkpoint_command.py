"""The shared main of the commands over checkpoints (`python -m trainer.sample`, `trainer.evaluate`):
Hydra composes conf/<name>.yaml with the overrides (`--help` and `--cfg job` work as for the trainer);
bad input is one line on stderr and exit code 2, and nothing is written."""

import os
import sys
from dataclasses import fields
from typing import Callable

from hydra import version
from hydra._internal.utils import _run_hydra
from hydra.core.config_store import ConfigStore
from hydra.errors import HydraException
from omegaconf.errors import OmegaConfBaseException

from trainer.cli.hydra_errors import one_line
from trainer.cli.main import command_line_parser, fail
from trainer.cli.preflight import CONF_DIR, quote_text_values
from trainer.cli.signals import EXIT_INTERRUPTED
from trainer.errors import ConfigError, UserError


def run_command(name: str, schema: type, task: Callable, usage: str, text_keys: tuple[str, ...] = ()) -> None:
    """Parse, check the keys against `schema`, and run `task` on the composed config of conf/<name>.yaml.
    `text_keys` are taken as typed (see quote_text_values)."""
    version.setbase("1.3")
    os.environ.setdefault("HYDRA_FULL_ERROR", "1")
    ConfigStore.instance().store(name=f"{name}_schema", node=schema)
    parser = command_line_parser(usage)
    try:
        args = parser.parse_intermixed_args(sys.argv[1:])
        if args.multirun:
            raise ConfigError("--multirun", f"python -m trainer.{name} runs one setting per command", "no -m")
        refuse_unknown_keys(args.overrides, schema, name)
        args.overrides = quote_text_values(args.overrides, text_keys)
        _run_hydra(args=args, args_parser=parser, task_function=task, config_path=CONF_DIR, config_name=name)
    except UserError as err:
        fail(str(err))
    except (HydraException, OmegaConfBaseException) as err:
        fail(one_line(err))
    except KeyboardInterrupt:
        print("interrupted: nothing written", file=sys.stderr)
        sys.exit(EXIT_INTERRUPTED)


def refuse_unknown_keys(overrides: list[str], schema: type, name: str) -> None:
    """A key the command does not have (a typo, a trainer key such as mode=..., a hydra.* key: the
    command has no run folder), named with the keys it has, before Hydra composes anything."""
    keys = [f.name for f in fields(schema)]
    for override in overrides:
        key = override.split("=", 1)[0].lstrip("+~")
        if key.split(".")[0] not in keys:
            raise ConfigError(key, f"no such key of python -m trainer.{name}", ", ".join(keys))
