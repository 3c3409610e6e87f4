"""Common interface of masking strategies: select positions, then corrupt them."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import torch
from torch import Tensor

from masking.corruption import Corruption
from masking.errors import MaskingConfigError


@dataclass(frozen=True, eq=False)  # eq=False: comparing tensors elementwise has no single truth value
class MaskingResult:
    corrupted: Tensor  # (B, T) long: the model input
    mask: Tensor  # (B, T) bool: every selected position, including those left unchanged or randomised

    def ratio(self) -> Tensor:
        """Per-row fraction of selected positions, (B,) float on the input's device (no host sync)."""
        return self.mask.float().mean(dim=1)


class MaskingStrategy(ABC):
    """Subclasses are dataclasses whose fields are the strategy's config (the `masking` group and every
    curriculum stage): parameters with their domains, then `type`, the name the config uses for it.
    Without a `corruption` field, or with `corruption=None`, every selected position becomes the mask id.
    """

    corruption: Corruption | None = None
    type: str

    @abstractmethod
    def select(self, x: Tensor, generator: torch.Generator) -> Tensor:
        """(B, T) bool selection for the (B, T) token ids `x`."""

    @abstractmethod
    def describe(self) -> str:
        """Short parameter summary for console lines."""

    def _check_type_and_corruption(self) -> None:
        name = self.__dataclass_fields__["type"].default
        if self.type != name:
            raise MaskingConfigError("type", f"this is the {name} strategy", name, self.type)
        if self.corruption is not None and not isinstance(self.corruption, Corruption):
            raise MaskingConfigError(
                "corruption", "not a Corruption", "a Corruption, a mapping of its fields, or None", self.corruption
            )

    def _describe_corruption(self) -> str:
        return "" if self.corruption is None else f" {self.corruption.describe()}"

    def __call__(self, x: Tensor, *, mask_id: int, base_vocab_size: int, generator: torch.Generator) -> MaskingResult:
        if x.dim() != 2:
            raise ValueError(f"expected token ids of shape (B, T), got {tuple(x.shape)}")
        selected = self.select(x, generator)
        if self.corruption is None:
            corrupted = x.masked_fill(selected, mask_id)
        else:
            corrupted = self.corruption.apply(
                x, selected, mask_id=mask_id, base_vocab_size=base_vocab_size, generator=generator
            )
        return MaskingResult(corrupted=corrupted, mask=selected)
