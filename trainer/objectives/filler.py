"""A frozen unmasking model that fills selected positions with its own predictions."""

from contextlib import AbstractContextManager

import torch

from trainer.vocab import Vocabulary


class Filler:
    def __init__(self, model: torch.nn.Module, vocab: Vocabulary, mode: str, autocast: AbstractContextManager):
        self.model, self.vocab, self.mode, self.autocast = model.eval().requires_grad_(False), vocab, mode, autocast

    @torch.no_grad()
    def __call__(
        self, corrupted: torch.Tensor, originals: torch.Tensor, predict_at: torch.Tensor, seed: int
    ) -> torch.Tensor:
        """`originals` with every position in `predict_at` (flat indices) replaced by the model's
        prediction from `corrupted`: its argmax or a sample, always a base character."""
        with self.autocast:
            logits = self.model(corrupted, predict_at=predict_at)
        # only real characters: the mask and the other special ids are never a completion
        logits = logits[:, : self.vocab.base_size].float()
        if self.mode == "argmax":
            predicted = logits.argmax(-1)
        else:
            generator = torch.Generator(device=logits.device).manual_seed(seed)
            predicted = torch.multinomial(logits.softmax(-1), 1, generator=generator).squeeze(1)
        filled = originals.flatten().clone()
        filled[predict_at] = predicted
        return filled.view_as(originals)
