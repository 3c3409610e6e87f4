"""A frozen unmasking model that fills selected positions with its own predictions."""

from contextlib import AbstractContextManager
from enum import Enum

import torch

from trainer.checkpoint import load_model
from trainer.compatibility import check_vocabulary
from trainer.errors import CheckpointError
from trainer.vocab import Vocabulary

KEY = "mode.unmasking_checkpoint"


class Fill(str, Enum):
    argmax = "argmax"  # the most likely character
    sample = "sample"  # a draw from the model's distribution over characters


class Filler:
    def __init__(self, model: torch.nn.Module, vocab: Vocabulary, fill: Fill, autocast: AbstractContextManager):
        self.model, self.vocab, self.fill, self.autocast = model.eval().requires_grad_(False), vocab, fill, autocast

    @classmethod
    def load(cls, path: str, vocab: Vocabulary, window: int, fill: Fill, device, autocast) -> "Filler":
        """The unmasking model of the checkpoint at `path`; CheckpointError when it cannot fill these windows."""
        model, payload = load_model(path, KEY, ("unmasking",), "a checkpoint of an unmasking run", device)
        check_vocabulary(payload, vocab, KEY, "an unmasking checkpoint trained on the same data")
        if payload["architecture"]["block_size"] < window:
            raise CheckpointError(
                KEY,
                f"its block_size {payload['architecture']['block_size']} is shorter than the windows of {window}",
                "an unmasking model with a block_size this long",
            )
        return cls(model, vocab, fill, autocast)

    @torch.no_grad()
    def __call__(
        self, corrupted: torch.Tensor, originals: torch.Tensor, predict_at: torch.Tensor, seed: int
    ) -> torch.Tensor:
        """`originals` with every position in `predict_at` (flat indices) replaced by the model's
        prediction from `corrupted`: its argmax or a sample, always a base character."""
        with self.autocast:
            logits = self.model(corrupted, predict_at=predict_at)
        # only real characters: the mask and the other special ids are never a completion
        logits = logits[:, : self.vocab.classes].float()
        if self.fill == Fill.argmax:
            predicted = logits.argmax(-1)
        else:
            generator = torch.Generator(device=logits.device).manual_seed(seed)
            predicted = torch.multinomial(logits.softmax(-1), 1, generator=generator).squeeze(1)
        filled = originals.flatten().clone()
        filled[predict_at] = predicted
        return filled.view_as(originals)
