"""Rows masked by curriculum stages: shared by the objectives whose data follows the stages."""

from dataclasses import dataclass

import torch

from trainer.batches import TokenWindows
from trainer.curriculum import Stage
from trainer.vocab import Vocabulary


@dataclass(frozen=True)
class MaskedRows:
    tokens: torch.Tensor  # (B, T) the original windows
    corrupted: torch.Tensor  # (B, T) after masking and corruption
    mask: torch.Tensor  # (B, T) bool, the selected positions
    row_stage: torch.Tensor  # (B,) the stage that masked each row

    def rows(self, start: int, stop: int) -> "MaskedRows":
        return MaskedRows(*(t[start:stop] for t in (self.tokens, self.corrupted, self.mask, self.row_stage)))

    @property
    def predict_at(self) -> torch.Tensor:
        """Flat indices of the selected positions, found on the CPU so the device never syncs for them."""
        return self.mask.flatten().nonzero().squeeze(1)


def masked_rows(
    windows: TokenWindows, plan: list[tuple[int, Stage, int]], vocab: Vocabulary, generator: torch.Generator
) -> MaskedRows:
    """Sample and mask `n` windows for each (stage index, stage, n) of the plan."""
    parts = []
    for index, stage, n in plan:
        x = windows.sample(n, generator)
        masked = stage.strategy(x, mask_id=vocab.mask_id, base_vocab_size=vocab.base_size, generator=generator)
        parts.append((x, masked.corrupted, masked.mask, torch.full((n,), index)))
    return MaskedRows(*(torch.cat(column) for column in zip(*parts)))


def validation_rows(
    stages: list[Stage],
    samples: int,
    windows: TokenWindows,
    vocab: Vocabulary,
    generator: torch.Generator,
    batch_size: int,
) -> list[MaskedRows]:
    """Equal samples for every validation stage (rounded up), in chunks of batch_size."""
    per_stage = -(-samples // len(stages))
    rows = masked_rows(windows, [(i, stage, per_stage) for i, stage in enumerate(stages)], vocab, generator)
    return [rows.rows(start, start + batch_size) for start in range(0, len(rows.tokens), batch_size)]
