"""`python -m trainer.sample`: the command's config, and drawing, ranking and keeping its samples.

The generator is a checkpoint of a language_model run (autoregressive sampling) or of an unmasking
run (iterative unmasking); a token_classification checkpoint may judge what to remask, a
sequence_scoring checkpoint may rank the samples, and a language_model checkpoint of the same
vocabulary (the `reference`) may score their generative perplexity. Every checkpoint is read, and
every setting checked against the models, before anything is drawn or written.
"""

import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

import torch
from annotated_types import Interval
from omegaconf import MISSING

from trainer.checkpoint import best_or_latest, load_model, load_reference
from trainer.compatibility import check_vocabulary
from trainer.errors import ConfigError
from trainer.objectives import MODES
from trainer.reporting import strict_json
from trainer.sampling.generate import Canvas, canvas, drawn_with, generate, records
from trainer.sampling.quality import measure
from trainer.sampling.settings import MAX_SAMPLES, Remasking, Sampling, SamplingConfig
from trainer.sampling.unmasking import Judge
from trainer.system import SystemConfig
from trainer.vocab import Vocabulary

# the modes whose models write text
GENERATORS = tuple(name for name, mode in MODES.items() if mode.sampling is not None)


@dataclass
class SampleCommand(SamplingConfig):
    num_samples: Annotated[int, Interval(ge=1, le=MAX_SAMPLES)] = 4
    seed: Annotated[int, Interval(ge=0, le=2**62)] | None = None  # null: drawn at random (and printed)
    checkpoint: str = MISSING  # a language_model or unmasking checkpoint, or a run folder (its best.pt)
    judge: str | None = None  # a token_classification checkpoint: its P(replaced) is low_confidence's doubt
    ranker: str | None = None  # a sequence_scoring checkpoint: scores every sample, printed best first
    out: str | None = None  # a JSONL file to (over)write with the samples, one object per sample
    ema: bool = True  # the averaged weights, where the run kept an average (optim.ema_decay > 0)
    system: SystemConfig = field(default_factory=SystemConfig)

    def __post_init__(self):
        super().__post_init__()
        self.checkpoint = str(best_or_latest(self.checkpoint, "checkpoint"))
        for key in ("judge", "ranker", "reference"):
            if getattr(self, key) is not None:
                setattr(self, key, str(best_or_latest(getattr(self, key), key)))
        if self.judge is not None and self.remasking != Remasking.low_confidence:
            raise ConfigError(
                "judge",
                f"scores the tokens low_confidence remasks; remasking={self.remasking.value} reads no score",
                "remasking=low_confidence",
            )
        if self.out is not None:
            read = (self.checkpoint, self.judge, self.ranker, self.reference)
            check_out(self.out, [path for path in read if path is not None])


def check_out(value: str, read: list[str]) -> None:
    """`out` must be a new or replaceable file in a writable folder, and never a file the command
    reads or a file of a run folder (a checkpoint, a run's metrics or samples)."""
    out = Path(value).expanduser()
    parent = out.parent
    allowed = "a .jsonl file outside run folders, e.g. samples.jsonl"
    if out.is_dir():
        raise ConfigError("out", f"{out} is a folder", allowed)
    if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        raise ConfigError("out", f"the folder {str(parent)!r} does not exist or is not writable", "a writable folder")
    if any(out.resolve() == Path(path).resolve() for path in read) or out.suffix == ".pt":
        raise ConfigError("out", f"{out} would overwrite a checkpoint", allowed)
    if parent.resolve().name == "checkpoints" or (out.exists() and (parent / "checkpoints").is_dir()):
        raise ConfigError("out", f"{out} would overwrite a file of the run folder {parent}", allowed)


@dataclass
class Prepared:
    """Everything the command draws with, loaded and checked."""

    model: torch.nn.Module
    vocab: Vocabulary
    mode: str
    step: int
    plan: Canvas
    autocast: object
    judge: Judge | None
    ranker: torch.nn.Module | None
    reference: torch.nn.Module | None


def prepare(command: SampleCommand) -> Prepared:
    """Load the checkpoints and check the settings against them; ConfigError/CheckpointError."""
    device, autocast, _ = command.system.resolve()
    allowed = f"a checkpoint of a {' or '.join(GENERATORS)} run"
    model, payload = load_model(command.checkpoint, "checkpoint", GENERATORS, allowed, device, command.ema)
    mode = payload["config"]["mode"]["name"]
    sampling = MODES[mode].sampling
    unread = command.unread(sampling)
    if unread:
        raise ConfigError(
            unread[0], f"is not read when sampling a {mode} checkpoint", "its default, or an unmasking checkpoint"
        )
    if command.judge is not None and sampling != Sampling.unmasking:
        raise ConfigError(
            "judge", f"chooses what iterative unmasking remasks; {mode} models sample left to right", "null"
        )
    vocab = Vocabulary.from_dict(payload["vocab"])
    plan = canvas(command, vocab, model.config.block_size, unmasking=sampling == Sampling.unmasking)
    judge = load_judge(command.judge, vocab, plan.sample_length, device) if command.judge else None
    ranker = load_ranker(command.ranker, vocab, plan.sample_length, device)
    reference = load_reference(command.reference, vocab, device)
    return Prepared(model, vocab, mode, payload["state"]["step"], plan, autocast, judge, ranker, reference)


def load_judge(path: str, vocab: Vocabulary, length: int, device) -> Judge:
    """P(replaced) per position (B, L) from a token classifier of the same vocabulary."""
    model, payload = load_model(path, "judge", ("token_classification",), "a token_classification checkpoint", device)
    check_vocabulary(payload, vocab, "judge", "a token classifier trained on the generator's text", "the generator")
    fits(model, length, "judge")
    return lambda ids: model(ids).float().softmax(-1)[..., 1]


def load_ranker(path: str | None, vocab: Vocabulary, length: int, device) -> torch.nn.Module | None:
    if path is None:
        return None
    model, payload = load_model(path, "ranker", ("sequence_scoring",), "a sequence_scoring checkpoint", device)
    check_vocabulary(payload, vocab, "ranker", "a sequence scorer trained on the generator's text", "the generator")
    fits(model, length + 1, "ranker")  # its input starts with [CLS]
    return model


def fits(model: torch.nn.Module, length: int, key: str) -> None:
    if length > model.config.block_size:
        raise ConfigError(
            key,
            f"its block of {model.config.block_size} is shorter than the {length} positions it would read",
            "shorter samples (length, prompt, template), or a model with a longer block_size",
        )


def draw_samples(command: SampleCommand, prepared: Prepared) -> list[dict]:
    """The samples as records (text, seed, settings, unigram_entropy, and gen_ppl with a reference,
    score with a ranker), ranked best first when a ranker scores them."""
    seed = command.seed if command.seed is not None else secrets.randbelow(2**31)
    ids = generate(prepared.model, prepared.vocab, command, prepared.plan, seed, prepared.autocast, prepared.judge)
    settings = drawn_with(command, MODES[prepared.mode].sample_keys(), prepared.plan)
    drawn = records(ids, prepared.vocab, seed, settings)
    for record in drawn:
        record.update(checkpoint=command.checkpoint, step=prepared.step, mode=prepared.mode)
        if command.reference is not None:
            record["reference"] = command.reference
    measure(drawn, ids, prepared.vocab, prepared.reference, prepared.autocast)
    if prepared.ranker is not None:
        scores = score(prepared.ranker, ids, prepared.vocab, prepared.autocast)
        for record, value in zip(drawn, scores):
            record["score"] = value
        drawn.sort(key=lambda record: record["score"])  # lower: fewer positions look regenerated
    return drawn


@torch.no_grad()
def score(ranker: torch.nn.Module, ids: torch.Tensor, vocab: Vocabulary, autocast) -> list[float]:
    """The sequence scorer's estimate of the regenerated fraction of each sample (B,), in [0, 1]."""
    cls = torch.full((ids.size(0), 1), vocab.cls_id, dtype=ids.dtype, device=ids.device)
    with autocast:
        return ranker(torch.cat([cls, ids], dim=1)).float().tolist()


def write_records(records: list[dict], path: str) -> None:
    """Write the JSONL file atomically: a failed command leaves the previous file as it was."""
    out = Path(path).expanduser()
    staging = out.with_name(f".{out.name}.tmp")
    staging.write_text("".join(strict_json.dumps(record) + "\n" for record in records))
    os.replace(staging, out)
