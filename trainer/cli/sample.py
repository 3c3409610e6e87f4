"""The command line of `python -m trainer.sample checkpoint=PATH [key=value ...]`.

Hydra composes conf/sample.yaml with the overrides (`--help`, `--cfg job` work as for the
trainer). Bad input is one line on stderr and exit code 2, and nothing is written; the only file
the command writes is `out`.
"""

from omegaconf import DictConfig
from rich.console import Console
from rich.markup import escape

from trainer.cli.checkpoint_command import run_command
from trainer.cli.main import fail
from trainer.cli.sample_command import SampleCommand, draw_samples, prepare, write_records
from trainer.contract import check
from trainer.errors import UserError


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
    for key in ("judge", "ranker", "reference"):  # each file read, as a run folder resolved to it
        if getattr(command, key) is not None:
            console.print(f"{key}: {escape(getattr(command, key))}", soft_wrap=True)
    for rank, record in enumerate(records, start=1):
        settings = " ".join(f"{key}={value!r}" for key, value in record["settings"].items())
        score = f" · score {record['score']:.4f}" if "score" in record else ""
        # the number the JSONL record holds (`sample`), and the place after ranking
        place = f" · rank {rank}" if prepared.ranker is not None else ""
        heading = f"[bold]sample {record['sample']}{place} · seed {record['seed']}{score}[/bold]{quality(record)}"
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
    usage = "python -m trainer.sample checkpoint=PATH [key=value ...]"
    run_command("sample", SampleCommand, sample, usage, text_keys=("prompt", "template"))
