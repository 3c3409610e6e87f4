"""`python -m trainer.evaluate checkpoint=PATH [split=test|val] [data=...]`: a checkpoint's
likelihood on a whole split (trainer/whole_split.py), printed as one table and appended to
evaluations.jsonl in the checkpoint's run folder.

The corpus is the checkpoint's own (from its stored config), or with a `data=` option another one,
read with the checkpoint's tokenizer (zero-shot). Bad input is one line on stderr and exit code 2,
and nothing is written.
"""

from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Annotated, Any

from annotated_types import Interval
from omegaconf import MISSING, DictConfig, OmegaConf
from rich.console import Console
from rich.table import Table

from trainer.build import prepare_corpus
from trainer.checkpoint import best_or_latest, load_model
from trainer.cli.checkpoint_command import run_command
from trainer.cli.main import fail
from trainer.compatibility import check_vocabulary
from trainer.config import register_schemas
from trainer.contract import check
from trainer.corpus import DataConfig, PreparedCorpus
from trainer.distributed import Distributed
from trainer.errors import ConfigError, UserError
from trainer.reporting import strict_json
from trainer.run_files import EVALUATIONS
from trainer.system import SystemConfig
from trainer.vocab import TOKENIZERS, GivenTokenizer, Vocabulary
from trainer.whole_split import SplitLikelihood, diffusion_elbo, language_model_nll

LIKELIHOOD_MODES = ("language_model", "unmasking")


class Split(str, Enum):
    test = "test"
    val = "val"


@dataclass
class EvaluateCommand:
    checkpoint: str = MISSING  # a language_model or unmasking checkpoint, or a run folder (its best.pt)
    split: Split = Split.test  # test: held out (data.test_fraction > 0); val: the validation split
    draws: Annotated[int, Interval(ge=1, le=1024)] = 4  # Monte Carlo estimates of the ELBO per window
    batch_size: Annotated[int, Interval(ge=1, le=65536)] = 32  # windows per forward pass
    block_size: Annotated[int, Interval(ge=1, le=2**20)] | None = None  # window length; null: the model's
    ema: bool = True  # the averaged weights, where the run kept an average (optim.ema_decay > 0)
    data: DataConfig | None = None  # another corpus (data=text data.path=..., data=text8 ...): zero-shot
    tokenizer: Any = None  # not read: the checkpoint's tokenizer is used (data=enwik8 chooses one)
    system: SystemConfig = field(default_factory=SystemConfig)

    def __post_init__(self):
        self.checkpoint = str(best_or_latest(self.checkpoint, "checkpoint"))


def evaluate(cfg: DictConfig) -> None:
    """Hydra's task function: check, load, evaluate, print, append the record. Under torchrun the
    processes share the windows and rank 0 reports their sums."""
    dist = Distributed.start()
    try:
        command = check(cfg, EvaluateCommand)
        device, autocast, _ = command.system.resolve()
        allowed = "a checkpoint of a language_model or unmasking run (a likelihood of text)"
        model, payload = load_model(command.checkpoint, "checkpoint", LIKELIHOOD_MODES, allowed, device, command.ema)
        length = command.block_size or model.config.block_size
        if length > model.config.block_size:
            raise ConfigError(
                "block_size", f"{length} is longer than the model's", f"at most {model.config.block_size}"
            )
        corpus = checkpoint_corpus(payload, command, dist)
        tokens = corpus.split(command.split.value)
        dist.barrier()  # every rank has opened the files before rank 0 moves them into the cache
        corpus.save()
    except UserError as err:
        fail(str(err))
    mode, vocab = payload["config"]["mode"]["name"], corpus.vocab
    if mode == "language_model":
        result = language_model_nll(model, tokens, length, command.batch_size, device, autocast, dist)
    else:
        result = diffusion_elbo(model, tokens, length, command.batch_size, vocab, command.draws, device, autocast, dist)
    dist.stop()
    if dist.is_main:
        report(command, payload, corpus, result, length)


def report(command: EvaluateCommand, payload: dict, corpus: PreparedCorpus, result: SplitLikelihood, length: int):
    """The table on the console and the record in evaluations.jsonl."""
    mode = payload["config"]["mode"]["name"]
    units = result.in_units(corpus.bytes_per_token(command.split.value), corpus.vocab.kind == "char")
    record = {
        "checkpoint": command.checkpoint,
        "step": payload["state"]["step"],
        "mode": mode,
        "split": command.split.value,
        "data": OmegaConf.to_container(OmegaConf.structured(command.data)) if command.data else "the run's",
        "measure": "exact NLL" if mode == "language_model" else f"ELBO, {command.draws} draws per window",
        "window": length,
        "weights": "averaged" if command.ema and payload.get("ema") else "trained",
        **units,
    }
    show(record)
    append_record(Path(command.checkpoint), record)


def checkpoint_corpus(payload: dict, command: EvaluateCommand, dist: Distributed) -> PreparedCorpus:
    """The corpus to evaluate on, read with the checkpoint's vocabulary; DataError naming a
    character or a document boundary the vocabulary cannot express."""
    vocab = Vocabulary.from_dict(payload["vocab"])
    if command.data is None:
        data = check(OmegaConf.merge(OmegaConf.structured(DataConfig), payload["config"]["data"]), DataConfig)
        saved = payload["config"].get("tokenizer", {"name": "char"})  # (checkpoints from before tokenizers: char)
        schema = TOKENIZERS[saved["name"]]
        tokenizer = check(OmegaConf.merge(OmegaConf.structured(schema), saved), schema)
    else:
        data, tokenizer = command.data, GivenTokenizer(vocab.tokenizer)
    corpus = prepare_corpus(data, tokenizer, dist)
    try:
        allowed = "the corpus it was trained on, or one of the same characters and document layout"
        check_vocabulary(payload, corpus.vocab, "data", allowed)
    except UserError:
        corpus.discard()
        raise
    return corpus


def show(record: dict) -> None:
    console = Console(highlight=False, width=max(Console().width, 120))  # the table's columns on one line
    title = (
        f"{record['checkpoint']} · step {record['step']} · {record['mode']} · {record['measure']} · "
        f"windows of {record['window']} · {record['weights']} weights"
    )
    table = Table(title=title)
    for column in ("split", "tokens", "nats/token", "bits/char", "bits/byte", "perplexity", "± bits/byte"):
        table.add_column(column, justify="right", no_wrap=True)
    error = record.get("standard_error_bits_per_byte")
    table.add_row(
        record["split"],
        f"{record['tokens']:,}",
        f"{record['nats_per_token']:.4f}",
        f"{record['bits_per_character']:.4f}" if "bits_per_character" in record else "-",
        f"{record['bits_per_byte']:.4f}",
        f"{record['perplexity']:.3f}",
        f"{error:.4f}" if error is not None else "exact",
    )
    console.print(table)


def append_record(checkpoint: Path, record: dict) -> None:
    """evaluations.jsonl of the run folder the checkpoint is in (beside it, for a loose file)."""
    folder = checkpoint.parent.parent if checkpoint.parent.name == "checkpoints" else checkpoint.parent
    with open(folder / EVALUATIONS, "a") as out:
        out.write(strict_json.dumps(record) + "\n")
    Console(highlight=False).print(f"appended to {folder / EVALUATIONS}", soft_wrap=True)


def main() -> None:
    register_schemas()  # the data and tokenizer groups' options
    usage = "python -m trainer.evaluate checkpoint=PATH [split=test|val] [data=...]"
    run_command("evaluate", EvaluateCommand, evaluate, usage)
