"""A model's likelihood on a whole split, as papers report it: non-overlapping windows that cover
every token once (the last window shorter), not sampled windows.

A language model gives its exact negative log-likelihood: windows of `length` inputs predict the
next `length` tokens, so every token but the split's first is predicted once, with the context of
its own window. A masked-diffusion model gives its ELBO (trainer/objectives/likelihood.py) on windows
of `length` tokens, each with `draws` Monte Carlo estimates at stratified masking levels; the
masked positions are seeded by the window's index, so the same checkpoint gives the same ELBO, and
processes of a torchrun share the windows and sum the same numbers.
"""

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from trainer.distributed import ONE_PROCESS, Distributed
from trainer.objectives.likelihood import bound_terms


@dataclass(frozen=True)
class SplitLikelihood:
    """Nats per token over a whole split: exact (language model) or a bound with its standard error."""

    nats_per_token: float
    tokens: int  # tokens scored
    standard_error: float | None = None  # of the bound's mean over windows (nats per token); None: exact

    def in_units(self, bytes_per_token: float, characters: bool) -> dict[str, float]:
        """nats and bits per token, bits per byte of text (and per character for a char vocabulary),
        perplexity per token, and the standard error in the same units."""
        bits = self.nats_per_token / math.log(2)
        units = {"nats_per_token": self.nats_per_token, "bits_per_byte": bits / bytes_per_token}
        if characters:
            units["bits_per_character"] = bits
        units["perplexity"] = math.exp(min(self.nats_per_token, 50.0))
        if self.standard_error is not None:
            units["standard_error_nats"] = self.standard_error
            units["standard_error_bits_per_byte"] = self.standard_error / math.log(2) / bytes_per_token
        units["tokens"] = self.tokens
        return units


def covering_windows(tokens: int, length: int, predicts_next: bool) -> list[tuple[int, int]]:
    """[start, stop) of the windows that cover a split of `tokens` once: of the positions predicted
    (1..tokens-1, inputs start..stop-1) for a language model, of every position for the bound."""
    end = tokens - 1 if predicts_next else tokens
    return [(start, min(start + length, end)) for start in range(0, end, length)]


def batched(windows: list[tuple[int, int]], rows: int) -> list[list[tuple[int, int]]]:
    """Batches of at most `rows` windows of one length (the shorter last window alone)."""
    full = [w for w in windows if w[1] - w[0] == windows[0][1] - windows[0][0]]
    batches = [full[i : i + rows] for i in range(0, len(full), rows)]
    return batches + [[w] for w in windows[len(full) :]]


@torch.no_grad()
def language_model_nll(
    model, tokens, length: int, rows: int, device, autocast, dist: Distributed = ONE_PROCESS
) -> SplitLikelihood:
    """The exact NLL of every token after the first. One host sync, at the end."""
    windows = covering_windows(len(tokens), length, predicts_next=True)
    total = torch.zeros(2, dtype=torch.float64, device=device)  # nats, tokens
    for batch in dist.shard(batched(windows, rows)):
        ids = torch.from_numpy(np.stack([np.asarray(tokens[a : b + 1]) for a, b in batch]).astype(np.int64)).to(device)
        with autocast:
            logits = model(ids[:, :-1]).float()
        nll = F.cross_entropy(logits.flatten(0, 1), ids[:, 1:].flatten(), reduction="sum")
        total += torch.stack([nll.double(), torch.tensor(ids[:, 1:].numel(), dtype=torch.float64, device=device)])
    nats, count = dist.sum_(total).tolist()
    return SplitLikelihood(nats / count, int(count))


@torch.no_grad()
def diffusion_elbo(
    model, tokens, length: int, rows: int, vocab, draws: int, device, autocast, dist: Distributed = ONE_PROCESS
) -> SplitLikelihood:
    """The ELBO in nats per token over every window, with the standard error of that mean over the
    windows (each window's bound weighted by its length). One host sync, at the end."""
    windows = covering_windows(len(tokens), length, predicts_next=False)
    # sums over windows of: nats X, tokens L, X^2, X*L, L^2 (for the ratio estimator's error)
    total = torch.zeros(5, dtype=torch.float64, device=device)
    first = {window: index for index, window in enumerate(windows)}
    for batch in dist.shard(batched(windows, rows)):
        ids = torch.from_numpy(np.stack([np.asarray(tokens[a:b]) for a, b in batch]).astype(np.int64)).to(device)
        with autocast:
            terms = bound_terms(model, ids, first[batch[0]], len(windows), vocab.mask_id, vocab.classes, draws)
        nats = terms.double().mean(1) * ids.size(1)  # of each window
        size = torch.full_like(nats, ids.size(1))
        total += torch.stack([nats.sum(), size.sum(), (nats**2).sum(), (nats * size).sum(), (size**2).sum()])
    nats, count, squares, products, sizes = dist.sum_(total).tolist()
    mean = nats / count
    # the standard error of a ratio of sums over W windows: the spread of X - mean * L
    residuals = max(squares - 2 * mean * products + mean**2 * sizes, 0.0) / max(len(windows) - 1, 1)
    return SplitLikelihood(mean, int(count), math.sqrt(residuals * len(windows)) / count)
