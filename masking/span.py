"""Span masking: each row masks the union of k random inclusive intervals."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

import torch
from annotated_types import Ge
from torch import Tensor

from masking.base import MaskingStrategy
from masking.errors import MaskingConfigError


@dataclass
class SpanMasking(MaskingStrategy):
    """2k uniform positions per row, sorted and paired (start, end); every [start, end] is selected.

    Every selected position becomes the mask id: span masking takes no BERT-style corruption (SPEC 4).
    """

    spans_count: Annotated[int, Ge(0)] = 5
    type: str = "span"

    def __post_init__(self) -> None:
        if self.spans_count == 0:
            raise MaskingConfigError(
                "spans_count", "masks no position at all, so the stage has no loss", "an integer >= 1", 0
            )
        self._check_type_and_corruption()

    def describe(self) -> str:
        return f"span k={self.spans_count}"

    def select(self, x: Tensor, generator: torch.Generator) -> Tensor:
        batch, seq_len = x.shape
        if seq_len <= 1:
            return torch.zeros(batch, seq_len, dtype=torch.bool, device=x.device)
        # randint(0, T) is floor(u * T) for u ~ U(0, 1) without float rounding at the top end.
        points = (
            torch.randint(0, seq_len, (batch, 2 * self.spans_count), generator=generator, device=x.device)
            .sort(dim=1)
            .values
        )
        starts, ends = points[:, 0::2], points[:, 1::2]
        # +1 at each start, -1 just after each end: the running sum is positive exactly inside some span.
        # Sorted pairs never overlap except at touching ends, so the sum never goes negative.
        edges = torch.zeros(batch, seq_len + 1, dtype=torch.long, device=x.device)
        edges.scatter_add_(1, starts, torch.ones_like(starts))
        edges.scatter_add_(1, ends + 1, -torch.ones_like(ends))
        return edges.cumsum(dim=1)[:, :seq_len] > 0
