"""Random masking: each row draws its own ratio, then selects positions independently."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated

import torch
from annotated_types import Interval
from torch import Tensor

from masking.base import MaskingStrategy
from masking.corruption import Corruption
from masking.errors import MaskingConfigError


@dataclass
class RandomMasking(MaskingStrategy):
    """Row b uses r_b ~ U(0, max_masked_ratio); every position is selected with probability r_b."""

    max_masked_ratio: Annotated[float, Interval(ge=0, le=1)] = 0.5
    corruption: Corruption | None = field(default_factory=Corruption)
    type: str = "random"

    def __post_init__(self) -> None:
        if self.max_masked_ratio == 0:
            raise MaskingConfigError(
                "max_masked_ratio", "masks no position at all, so the stage has no loss", "a number in (0, 1]", 0.0
            )
        self._check_type_and_corruption()

    def describe(self) -> str:
        return f"random r<={self.max_masked_ratio:.2f}{self._describe_corruption()}"

    def select(self, x: Tensor, generator: torch.Generator) -> Tensor:
        batch, seq_len = x.shape
        row_ratio = torch.rand(batch, 1, generator=generator, device=x.device) * self.max_masked_ratio
        return torch.rand(batch, seq_len, generator=generator, device=x.device) < row_ratio
