"""The command line of `python -m trainer.sample checkpoint=PATH [key=value ...]`.

Hydra composes conf/sample.yaml with the overrides (`--help`, `--cfg job` work as for the
trainer). Bad input is one line on stderr and exit code 2, and nothing is written; the only file
the command writes is `out`.
"""

import os
import sys
from dataclasses import fields

from hydra import version
from hydra._internal.utils import _run_hydra
from hydra.core.config_store import ConfigStore
from hydra.errors import HydraException
from omegaconf import DictConfig
from omegaconf.errors import OmegaConfBaseException
from rich.console import Console
from rich.markup import escape

from trainer.cli.hydra_errors import one_line
from trainer.cli.main import command_line_parser, fail
from trainer.cli.preflight import CONF_DIR, quote_text_values
from trainer.cli.sample_command import SampleCommand, draw_samples, prepare, write_records
from trainer.cli.signals import EXIT_INTERRUPTED
from trainer.contract import check
from trainer.errors import ConfigError, UserError


def sample(cfg: DictConfig) -> None:
    """Hydra's task function: check, load, draw, print, write `out`."""
    try:  # here, not around Hydra: Hydra would report the error as a failed job first
        command = check(cfg, SampleCommand)
        prepared = prepare(command)
    except UserError as err:
        fail(str(err))
    records = draw_samples(command, prepared)
    console = Console(highlight=False)
    ranked = " (ranked by the sequence scorer, lowest score first)" if prepared.ranker is not None else ""
    count = f"{len(records)} sample{'s' * (len(records) != 1)}"
    source = f"{escape(command.checkpoint)} ({prepared.mode}, step {prepared.step})"
    console.print(f"{count} of {source}{ranked}", soft_wrap=True)
    for rank, record in enumerate(records, start=1):
        settings = " ".join(f"{key}={value!r}" for key, value in record["settings"].items())
        score = f" · score {record['score']:.4f}" if "score" in record else ""
        heading = f"[bold]sample {rank} · seed {record['seed']}{score}[/bold]{quality(record)}"
        console.print(f"{heading} · {escape(settings)}", soft_wrap=True)
        console.print(record["text"], markup=False, soft_wrap=True)
    console.print(summary(records), soft_wrap=True)
    if command.out is not None:
        write_records(records, command.out)
        console.print(f"wrote {count} to {escape(command.out)}", soft_wrap=True)


def quality(record: dict) -> str:
    """A sample's measures for its heading: its gen-PPL under the reference (with one) and its unigram entropy."""
    shown = f" · gen-PPL {record['gen_ppl']:.2f}" if record.get("gen_ppl") is not None else ""
    return f"{shown} · entropy {record['unigram_entropy']:.3f}"


def summary(records: list[dict]) -> str:
    """One line after the samples: the mean gen-PPL (with a reference) and the mean unigram entropy (nats)."""
    entropy = sum(record["unigram_entropy"] for record in records) / len(records)
    line = f"mean unigram entropy {entropy:.3f} nats"
    ppl = [record["gen_ppl"] for record in records if record.get("gen_ppl") is not None]
    if ppl:
        line = f"mean gen-PPL {sum(ppl) / len(ppl):.2f} · {line}"
    return line


def main() -> None:
    version.setbase("1.3")
    os.environ.setdefault("HYDRA_FULL_ERROR", "1")
    ConfigStore.instance().store(name="sample_schema", node=SampleCommand)
    parser = command_line_parser("python -m trainer.sample checkpoint=PATH [key=value ...]")
    try:
        args = parser.parse_intermixed_args(sys.argv[1:])
        if args.multirun:
            raise ConfigError("--multirun", "samples are drawn by one command", "one command per setting")
        refuse_unknown_keys(args.overrides)
        args.overrides = quote_text_values(args.overrides, ("prompt", "template"))
        _run_hydra(args=args, args_parser=parser, task_function=sample, config_path=CONF_DIR, config_name="sample")
    except UserError as err:
        fail(str(err))
    except (HydraException, OmegaConfBaseException) as err:
        fail(one_line(err))
    except KeyboardInterrupt:
        print("interrupted: nothing written", file=sys.stderr)
        sys.exit(EXIT_INTERRUPTED)


def refuse_unknown_keys(overrides: list[str]) -> None:
    """A key the command does not have (a typo, a trainer key such as mode=..., a hydra.* key: the
    command has no run folder), named with the keys it has, before Hydra composes anything."""
    keys = [f.name for f in fields(SampleCommand)]
    for override in overrides:
        key = override.split("=", 1)[0].lstrip("+~")
        if key.split(".")[0] not in keys:
            raise ConfigError(key, "no such key of python -m trainer.sample", ", ".join(keys))
