"""BERT-style corruption of the positions a masking strategy selected."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

import torch
from annotated_types import Interval
from torch import Tensor

from masking.errors import MaskingConfigError

Probability = Annotated[float, Interval(ge=0, le=1)]


@dataclass
class Corruption:
    """Selected positions become the mask id (mask_prob), a uniform random id (random_prob), or stay unchanged."""

    mask_prob: Probability = 0.8
    random_prob: Probability = 0.1

    def __post_init__(self) -> None:
        # Small tolerance: 0.7 + 0.3 style sums must not fail on float noise.
        if self.mask_prob + self.random_prob > 1.0 + 1e-9:
            raise MaskingConfigError(
                "random_prob",
                f"mask_prob + random_prob must not exceed 1 (mask_prob={self.mask_prob})",
                "a number in [0, 1 - mask_prob]",
                self.random_prob,
            )

    @property
    def keep_prob(self) -> float:
        return max(0.0, 1.0 - self.mask_prob - self.random_prob)

    def describe(self) -> str:
        return f"corrupt={self.mask_prob:.2f}/{self.random_prob:.2f}/{self.keep_prob:.2f}"

    def apply(
        self, x: Tensor, selected: Tensor, *, mask_id: int, base_vocab_size: int, generator: torch.Generator
    ) -> Tensor:
        """Return a corrupted copy of `x`; positions outside `selected` are never changed."""
        u = torch.rand(x.shape, generator=generator, device=x.device)
        # Random ids are drawn from the base vocabulary only, so the mask id (appended after it) never appears here.
        random_ids = torch.randint(0, base_vocab_size, x.shape, generator=generator, device=x.device, dtype=x.dtype)
        to_mask = selected & (u < self.mask_prob)
        to_random = selected & ~to_mask & (u < self.mask_prob + self.random_prob)
        return torch.where(to_random, random_ids, x.masked_fill(to_mask, mask_id))
