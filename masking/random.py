"""Random masking: each row draws its own ratio, then selects positions independently."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from masking.base import MaskingStrategy
from masking.corruption import Corruption
from masking.errors import check_number


@dataclass(frozen=True)
class RandomMasking(MaskingStrategy):
    """Row b uses r_b ~ U(0, max_masked_ratio); every position is selected with probability r_b."""

    max_masked_ratio: float
    corruption: Corruption | None = Corruption()

    ALLOWED: ClassVar[dict[str, str]] = {
        "max_masked_ratio": "a number in [0, 1]",
        "corruption": "a Corruption, a mapping of its fields, or None",
    }

    def __post_init__(self) -> None:
        check_number("max_masked_ratio", self.max_masked_ratio, self.ALLOWED["max_masked_ratio"], low=0, high=1)
        self._check_corruption()

    def describe(self) -> str:
        return f"random r<={self.max_masked_ratio:.2f}{self._describe_corruption()}"

    def select(self, x: Tensor, generator: torch.Generator) -> Tensor:
        batch, seq_len = x.shape
        row_ratio = torch.rand(batch, 1, generator=generator, device=x.device) * self.max_masked_ratio
        return torch.rand(batch, seq_len, generator=generator, device=x.device) < row_ratio
