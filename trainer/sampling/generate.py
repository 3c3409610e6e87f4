"""Samples of a generative model as text: the canvas a command asks for, checked against the model,
then filled by autoregressive sampling (a language model) or iterative unmasking."""

import re
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass

import torch

from trainer.errors import ConfigError
from trainer.sampling.decoding import RowNoise, autoregressive
from trainer.sampling.settings import SamplingConfig
from trainer.sampling.unmasking import Judge, iterative_unmasking
from trainer.vocab import Vocabulary

START = "\n"  # a language model's context when the prompt is empty (nanoGPT's start)


@dataclass(frozen=True)
class Canvas:
    """What a sample starts from: `ids` (L,) on the CPU, and for iterative unmasking the positions
    to generate, `generate` (L,) bool; a language model appends `length` characters to `ids`."""

    ids: torch.Tensor
    generate: torch.Tensor | None
    length: int
    shown_from: int  # the text of a sample starts here (after a start character the user did not type)

    @property
    def sample_length(self) -> int:
        """Characters of each finished sample."""
        appended = self.length if self.generate is None else 0
        return len(self.ids) + appended - self.shown_from


def canvas(settings: SamplingConfig, vocab: Vocabulary, block_size: int, unmasking: bool, prefix: str = "") -> Canvas:
    """The canvas of `settings` for a model of `block_size`; ConfigError (keys under `prefix`) when
    the prompt or template holds an unknown character or does not fit."""
    prompt = encode(typed(settings.prompt), vocab, prefix + "prompt")
    if not unmasking:
        return _autoregressive_canvas(settings, vocab, block_size, prompt, prefix)
    if settings.template is not None:
        text, holes = template_ids(typed(settings.template), vocab, prefix + "template")
        ids, generate = torch.cat([prompt, text]), torch.cat([torch.zeros(len(prompt), dtype=torch.bool), holes])
    else:
        length = settings.length if settings.length is not None else block_size - len(prompt)
        if length < 1:
            raise ConfigError(prefix + "prompt", f"fills the whole block of {block_size}", "a shorter prompt")
        ids = torch.cat([prompt, torch.zeros(length, dtype=torch.long)])
        generate = torch.arange(len(ids)) >= len(prompt)
    if len(ids) > block_size:
        what = "prompt + template" if settings.template is not None else "prompt + length"
        raise ConfigError(
            prefix + ("template" if settings.template is not None else "length"),
            f"{what} is {len(ids)} characters, longer than the model's block of {block_size}",
            f"at most {block_size} characters in all",
        )
    return Canvas(ids, generate, int(generate.sum()), 0)


def _autoregressive_canvas(
    settings: SamplingConfig, vocab: Vocabulary, block_size: int, prompt: torch.Tensor, prefix: str
) -> Canvas:
    shown_from = 0
    if len(prompt) == 0:  # start a new document, or (a char corpus of one document) a new line
        if vocab.documents:
            prompt = torch.tensor([vocab.eod_id])
        elif START not in vocab.tokenizer.chars:
            off = f", or {prefix}num_samples=0" if prefix else ""
            raise ConfigError(
                prefix + "prompt", "empty, and the vocabulary has no newline to start from", f"a prompt{off}"
            )
        else:
            prompt = encode(START, vocab, prefix + "prompt")
        shown_from = 1
    length = settings.length if settings.length is not None else block_size - len(prompt) + shown_from
    if length < 1:
        raise ConfigError(prefix + "length", f"null, and the prompt fills the block of {block_size}", "an integer >= 1")
    return Canvas(prompt, None, length, shown_from)


def typed(text: str) -> str:
    """A prompt or template as meant: `\\n` (backslash, n) stands for a newline."""
    return text.replace("\\n", "\n")


def encode(text: str, vocab: Vocabulary, key: str) -> torch.Tensor:
    """(n,) ids of a prompt or a template's text; ConfigError when the tokenizer cannot encode it."""
    unknown = vocab.tokenizer.unknown(text)
    if unknown:
        shown = ", ".join(map(repr, unknown)) if vocab.kind == "char" else repr(unknown)
        hint = " (`_` marks a position to fill)" if key.endswith("template") and vocab.kind in ("char", "byte") else ""
        raise ConfigError(
            key, f"{shown} not in the model's vocabulary", f"text its {vocab.kind} tokenizer encodes{hint}"
        )
    return torch.from_numpy(vocab.encode(text).astype("int64"))


def template_ids(template: str, vocab: Vocabulary, key: str) -> tuple[torch.Tensor, torch.Tensor]:
    """A template's ids (L,) and its holes (L,) bool: each `_` is one id to fill for a char or byte
    vocabulary, and `{n}` is n tokens to fill for a subword one (its tokens are not characters)."""
    one_per_id = vocab.kind in ("char", "byte")
    pieces = re.split(r"(_)" if one_per_id else r"\{(\d+)\}", template)
    ids, holes = [], []
    for index, piece in enumerate(pieces):
        if index % 2 == 0:
            ids.append(encode(piece, vocab, key))
            holes.append(torch.zeros(len(ids[-1]), dtype=torch.bool))
            continue
        count = 1 if one_per_id else int(piece)
        if count < 1:
            raise ConfigError(key, "{0} fills no token", "{n} with n >= 1: n tokens to fill")
        ids.append(torch.zeros(count, dtype=torch.long))
        holes.append(torch.ones(count, dtype=torch.bool))
    if len(pieces) == 1:
        fill = (
            "`_` per position" if one_per_id else f"{{n}} for n tokens (`_` is for char and byte; this is {vocab.kind})"
        )
        raise ConfigError(key, "holds no position to fill, so nothing would be generated", f"a text with {fill}")
    return torch.cat(ids), torch.cat(holes)


def drawn_with(settings: SamplingConfig, keys: tuple[str, ...], plan: Canvas) -> dict:
    """The settings of `keys` (those a mode reads) as plain values, but the count and the seed (each
    record holds its own), with the length drawn: characters generated per sample."""
    shown = settings.describe(k for k in keys if k not in ("num_samples", "seed"))
    shown["length"] = plan.length
    return shown


def records(ids: torch.Tensor, vocab: Vocabulary, seed: int, settings: dict) -> list[dict]:
    """One record per sample (B, L) ids: its number, the seed it was drawn from, its text, the settings."""
    return [
        {"sample": i, "seed": seed + i, "text": vocab.decode(document(row, vocab)), "settings": settings}
        for i, row in enumerate(ids.tolist())
    ]


def document(ids: list[int], vocab: Vocabulary) -> list[int]:
    """A sample ends where it ends its document: the ids before its first end-of-document id."""
    return ids[: ids.index(vocab.eod_id)] if vocab.eod_id in ids else ids


@torch.no_grad()
def generate(
    model: torch.nn.Module,
    vocab: Vocabulary,
    settings: SamplingConfig,
    plan: Canvas,
    seed: int,
    autocast: AbstractContextManager | None = None,
    judge: Judge | None = None,
) -> torch.Tensor:
    """`settings.num_samples` samples of `plan` as (num_samples, L) ids; sample i from seed + i."""
    device = next(model.parameters()).device
    rows = settings.num_samples
    noise = RowNoise(seed, rows, device)
    ids = plan.ids.to(device).expand(rows, -1)
    was_training = model.training
    model.eval()
    with autocast or nullcontext():
        if plan.generate is None:
            out = autoregressive(model, ids, plan.length, vocab.classes, settings, noise)
        else:
            generate_at = plan.generate.to(device).expand(rows, -1)
            out = iterative_unmasking(model, ids, generate_at, vocab.mask_id, vocab.classes, settings, noise, judge)
    model.train(was_training)
    return out[:, plan.shown_from :]
