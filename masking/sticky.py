"""Sticky masking: masks grow into runs, hitting an exact per-row target count."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import Tensor

from masking.base import MaskingStrategy
from masking.corruption import Corruption, Probability
from masking.errors import MaskingConfigError

ROUNDS_PER_SYNC = 4  # growth rounds between two host checks of "does any row still need more?"
MAX_ROUNDS = 1000


@dataclass
class StickyMasking(MaskingStrategy):
    """Each round, an unselected position is selected with p2 if a neighbour is selected, else with p1.

    Every row ends with exactly `target_count(T)` selected positions (SPEC 4).
    """

    target_masked_ratio: Probability = 0.4
    p1_probability: Probability = 0.15
    p2_probability: Probability = 0.3
    corruption: Corruption | None = field(default_factory=Corruption)
    type: str = "sticky"

    def __post_init__(self) -> None:
        if self.target_masked_ratio == 0:
            raise MaskingConfigError(
                "target_masked_ratio", "masks no position at all, so the stage has no loss", "a number in (0, 1]", 0.0
            )
        if self.p1_probability == 0:
            raise MaskingConfigError(
                "p1_probability",
                "sticky masking cannot reach its target with p1_probability=0",
                "a number in (0, 1]",
                self.p1_probability,
            )
        self._check_type_and_corruption()

    def target_count(self, seq_len: int) -> int:
        """ceil(r * T) clamped to T; the epsilon keeps float noise (0.7 * 10 = 7.000000000000001) from adding one."""
        return min(seq_len, max(0, math.ceil(self.target_masked_ratio * seq_len - 1e-9)))

    @staticmethod
    def max_rounds(target: int) -> int:
        return min(MAX_ROUNDS, 10 * target)

    def describe(self) -> str:
        return (
            f"sticky r={self.target_masked_ratio:.2f} p1={self.p1_probability:.2f} "
            f"p2={self.p2_probability:.2f}{self._describe_corruption()}"
        )

    def select(self, x: Tensor, generator: torch.Generator) -> Tensor:
        batch, seq_len = x.shape
        target = self.target_count(seq_len)
        selected = torch.zeros(batch, seq_len, dtype=torch.bool, device=x.device)
        if target == 0 or target == seq_len:
            return selected.fill_(target == seq_len)

        budget = self.max_rounds(target)
        rounds = 0
        while rounds < budget:
            for _ in range(min(ROUNDS_PER_SYNC, budget - rounds)):
                selected = self._grow(selected, target, generator)
                rounds += 1
            # The one host sync per chunk of rounds: stop once every row has reached its target.
            if rounds < budget and not bool((selected.sum(dim=1) < target).any()):
                break

        # Exactly `target` per row in one step: selected positions outrank unselected ones, random order within
        # each group, so top-k trims overshooting rows and tops up short rows uniformly at random.
        score = selected.float() + torch.rand(batch, seq_len, generator=generator, device=x.device)
        keep = score.topk(target, dim=1).indices
        return torch.zeros_like(selected).scatter_(1, keep, True)

    def _grow(self, selected: Tensor, target: int, generator: torch.Generator) -> Tensor:
        """One round; neighbours are read from the state at the start of the round."""
        growing = selected.sum(dim=1, keepdim=True) < target
        neighbour = torch.zeros_like(selected)
        neighbour[:, 1:] |= selected[:, :-1]
        neighbour[:, :-1] |= selected[:, 1:]
        prob = torch.where(neighbour, self.p2_probability, self.p1_probability)
        u = torch.rand(selected.shape, generator=generator, device=selected.device)
        return selected | (growing & (u < prob))
