"""Next-token prediction (nanoGPT): causal attention, cross-entropy over every position."""

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from models import Attention, Head
from trainer.batches import TokenWindows
from trainer.objectives.base import Batch, ModeConfig, Objective


@dataclass
class LanguageModelMode(ModeConfig):
    name: str = "language_model"

    head = Head.lm
    attention = Attention.causal
    window_offset = 1  # inputs tokens[:-1], targets tokens[1:]

    def build_objective(self, vocab, curriculum, filler) -> Objective:
        return LanguageModelObjective()


class LanguageModelObjective(Objective):
    def make_batch(
        self, windows: TokenWindows, rows: int, generator: torch.Generator, stage: int = 0, step: int = 0
    ) -> Batch:
        tokens = windows.sample(rows, generator)
        return Batch(inputs=tokens[:, :-1].contiguous(), targets=tokens[:, 1:].contiguous())

    def loss(self, model, batch: Batch) -> torch.Tensor:
        logits = model(batch.inputs)
        return F.cross_entropy(logits.flatten(0, 1).float(), batch.targets.flatten())

    @torch.no_grad()
    def evaluate(self, model, batches: list[Batch]) -> dict[str, float]:
        total = sum(self.loss(model, b) * b.num_targets for b in batches)
        loss = (total / sum(b.num_targets for b in batches)).item()
        return {"loss": loss, "perplexity": math.exp(min(loss, 50.0))}
