"""Next-token prediction (nanoGPT): causal attention, cross-entropy over every position."""

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from models import Attention, Head
from trainer.batches import TokenWindows
from trainer.loss import Predictions
from trainer.objectives.base import Batch, ClassifierObjective, ModeConfig, Objective
from trainer.sampling.settings import Sampling


@dataclass
class LanguageModelMode(ModeConfig):
    name: str = "language_model"

    head = Head.lm
    sampling = Sampling.autoregressive
    attention = Attention.causal
    window_offset = 1  # inputs tokens[:-1], targets tokens[1:]
    loss_refusals = {
        "weight_by_mask_ratio": "a language model masks nothing, so there is no mask ratio",
        "reduction": "every sample has block_size targets, so per-sample means are the token mean",
    }

    def build_objective(self, vocab, curriculum, filler, loss) -> Objective:
        return LanguageModelObjective(loss.build(vocab.classes))


class LanguageModelObjective(ClassifierObjective):
    def make_batch(
        self, windows: TokenWindows, rows: int, generator: torch.Generator, stage: int = 0, step: int = 0
    ) -> Batch:
        tokens = windows.sample(rows, generator)
        return Batch(inputs=tokens[:, :-1].contiguous(), targets=tokens[:, 1:].contiguous())

    def predictions(self, model, batch: Batch) -> Predictions:
        logits = model(batch.inputs)
        return Predictions(logits.flatten(0, 1), batch.targets.flatten(), rows=batch.inputs.size(0))

    def collect(self, model, batches: list[Batch]) -> dict[str, torch.Tensor]:
        """The cross-entropy of every target."""
        losses = [
            F.cross_entropy(self.predictions(model, b).logits.float(), b.targets.flatten(), reduction="none")
            for b in batches
        ]
        return {"loss": torch.cat(losses)}

    def summarize(self, values: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        loss = values["loss"].mean()
        # bits per character: on one scale with an unmasking model's val/bpc_bound
        return {"loss": loss, "perplexity": loss.clamp(max=50.0).exp(), "bpc": loss / math.log(2)}
