"""ELBO masking: the masked-diffusion forward process the likelihood bound integrates over.

Masked diffusion with an absorbing [MASK] state and the linear schedule (MDLM: Sahoo et al. 2024,
"Simple and Effective Masked Diffusion Language Models"; MD4: Shi et al. 2024, "Simplified and
Generalized Masked Diffusion for Discrete Data") bounds -log p(x) by an expectation over every
masking level t in (0, 1]. Integrating t out for a fixed number n of masked positions gives the
form with n ~ U{1..T} and the per-row mean of the cross-entropy over the n masked positions (RADD:
Ou et al. 2024; LLaDA: Nie et al. 2025), which is what `trainer/objectives/likelihood.py` evaluates.
Training on this strategy with `loss.reduction=sample` minimises that bound's estimator itself.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from masking.base import MaskingStrategy


@dataclass
class ElboMasking(MaskingStrategy):
    """Row b masks exactly n_b ~ U{1..T} positions, chosen uniformly at random, all with the mask id.

    `stratified`: the rows' levels t_b = (u + b / B) mod 1 share one uniform u, MDLM's low-discrepancy
    sampler, so every batch covers the masking levels evenly (lower-variance gradients); n_b = 1 +
    floor(t_b * T). Every selected position becomes the mask id (absorbing state): no BERT-style
    corruption, which the bound never sees.
    """

    stratified: bool = True
    type: str = "elbo"

    def __post_init__(self) -> None:
        self._check_type_and_corruption()

    def describe(self) -> str:
        return f"elbo n~U{{1..T}}{' stratified' if self.stratified else ''}"

    def levels(self, batch: int, generator: torch.Generator, device: torch.device) -> Tensor:
        """The rows' masking levels t (B,) in [0, 1): independent, or stratified across the batch."""
        if not self.stratified:
            return torch.rand(batch, generator=generator, device=device)
        offset = torch.rand(1, generator=generator, device=device)
        return (offset + torch.arange(batch, device=device) / batch) % 1.0

    def counts(self, batch: int, seq_len: int, generator: torch.Generator, device: torch.device) -> Tensor:
        """n (B,) long, uniform over 1..T (stratified: each 1/B-quantile of t gives one row)."""
        t = self.levels(batch, generator, device)
        # the clamp guards float rounding of t * T up to T
        return (t * seq_len).long().clamp(max=seq_len - 1) + 1

    def select(self, x: Tensor, generator: torch.Generator) -> Tensor:
        batch, seq_len = x.shape
        if seq_len == 0:
            return torch.zeros_like(x, dtype=torch.bool)
        counts = self.counts(batch, seq_len, generator, x.device)
        # a uniformly random subset of counts[b] positions: the ranks of random keys below the count
        ranks = torch.rand(batch, seq_len, generator=generator, device=x.device).argsort(1).argsort(1)
        return ranks < counts[:, None]
