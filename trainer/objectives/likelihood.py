"""A likelihood bound for unmasking (masked-diffusion) models, in nats per character.

The continuous-time ELBO of masked diffusion with the linear schedule (each position masked with
probability t; Sahoo et al. 2024, "Simple and Effective Masked Diffusion Language Models"; Shi et
al. 2024, "Simplified and Generalized Masked Diffusion for Discrete Data") bounds the negative
log-likelihood of a window x of T characters:

    -log p(x) <= E_{t~U(0,1)} [ (1/t) * sum over masked positions i of -log p(x_i | x_t) ]

Integrating t out for a fixed number n of masked positions (the integral of Binomial(n; T, t) / t
over t is 1/n) gives the same bound with lower variance (Ou et al. 2024, "Your Absorbing Discrete
Diffusion Secretly Models the Conditional Distributions of Clean Data"; Nie et al. 2025, LLaDA):

    -log p(x) / T <= E_{n~U{1..T}} [ mean over n uniformly chosen masked positions of CE ]

Here n = ceil(t * T) for a fixed, stratified set of t values (deterministic between evaluations),
the masked positions are drawn by a generator seeded per validation batch, the input is plain
masking (no random or kept corruption), and the model's distribution is over the base ids (the one
the sampler draws from). A model uniform over the M base ids gets exactly ln M.
"""

import torch
import torch.nn.functional as F

BOUND_SEED = 20240607  # the masked positions of the bound: the same at every evaluation


def originals(inputs: torch.Tensor, predict_at: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """The uncorrupted windows (B, T) of a validation batch: its inputs with the targets put back at
    the selected positions (a strategy never changes a position it did not select)."""
    windows = inputs.clone()
    windows.view(-1)[predict_at] = targets
    return windows


def masked_counts(rows: int, first_row: int, total_rows: int, draw: int, draws: int, length: int) -> torch.Tensor:
    """n (rows,) for rows first_row.. of total_rows at draw `draw` of `draws`: stratified t values
    t = (draw + (row + 0.5) / total_rows) / draws, spread evenly over (0, 1), and n = ceil(t * T)."""
    row = torch.arange(first_row, first_row + rows, dtype=torch.float64)
    t = (draw + (row + 0.5) / total_rows) / draws
    return torch.ceil(t * length).long().clamp(1, length)


def random_subsets(counts: torch.Tensor, length: int, seeds: list[int]) -> torch.Tensor:
    """(rows, length) bool with counts[r] positions of row r chosen uniformly at random, from a
    generator of its own seeded seeds[r] (CPU): a row's subset does not depend on its batch."""
    keys = torch.stack([torch.rand(length, generator=torch.Generator().manual_seed(seed)) for seed in seeds])
    return keys.argsort(1).argsort(1) < counts[:, None]


@torch.no_grad()
def bound_terms(
    model, windows: torch.Tensor, first_row: int, total_rows: int, mask_id: int, base_size: int, draws: int
) -> torch.Tensor:
    """The bound's terms (B, draws) for the windows (B, T) on the device, rows first_row.. of the
    total_rows validation windows: for each row and draw, the mean cross-entropy at its n masked
    positions. Their mean is the bound in nats per character. No host sync."""
    rows, length = windows.shape
    terms = []
    for draw in range(draws):
        counts = masked_counts(rows, first_row, total_rows, draw, draws, length)
        seeds = [BOUND_SEED + (first_row + row) * draws + draw for row in range(rows)]
        predict_at = random_subsets(counts, length, seeds).flatten().nonzero().squeeze(1).to(windows.device)
        inputs = windows.clone()
        inputs.view(-1)[predict_at] = mask_id
        logits = model(inputs, predict_at=predict_at)[:, :base_size].float()
        ce = F.cross_entropy(logits, windows.view(-1)[predict_at], reduction="none")
        per_row = torch.zeros(rows, device=windows.device).index_add_(0, predict_at // length, ce)
        terms.append(per_row / counts.to(windows.device))
    return torch.stack(terms, dim=1)


def nll_bound(model, windows: list[torch.Tensor], mask_id: int, base_size: int, draws: int) -> torch.Tensor:
    """The bound in nats per character over batches of windows ((B, T) device tensors), as a 0-dim
    device tensor."""
    total_rows, first_row, terms = sum(len(w) for w in windows), 0, []
    for batch in windows:
        terms.append(bound_terms(model, batch, first_row, total_rows, mask_id, base_size, draws))
        first_row += len(batch)
    return torch.cat(terms).mean()
