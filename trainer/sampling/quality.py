"""Sample quality as the masked-diffusion papers report it (MDLM, Sahoo et al. 2024, sec. 4.1; Duo,
Sahoo et al. 2025): the generative perplexity of samples under a reference language model, and the
unigram entropy of each sample, which exposes the repetitive samples a low perplexity can hide.

Plain arguments in, numbers out: nothing here imports trainer.cli or Hydra.
"""

import math
from collections import Counter
from collections.abc import Sequence
from contextlib import AbstractContextManager, nullcontext

import torch
import torch.nn.functional as F

from trainer.sampling.generate import document


def unigram_entropy(ids: Sequence[int] | torch.Tensor) -> float:
    """The entropy in nats of the token distribution of one sample, H = sum_t p_t ln(1 / p_t) with
    p_t = count(t) / n (Duo's `entropy`). ids: (n,) ints. A constant sample gives exactly 0, a
    sample using k tokens equally often ln k; an empty one 0."""
    ids = ids.tolist() if isinstance(ids, torch.Tensor) else list(ids)
    n = len(ids)
    return sum(count / n * math.log(n / count) for count in Counter(ids).values())


@torch.no_grad()
def generative_perplexity(
    reference_model: torch.nn.Module,
    ids: torch.Tensor,
    autocast: AbstractContextManager | None = None,
    classes: int | None = None,
    lengths: Sequence[int] | None = None,
) -> torch.Tensor:
    """Per-sample perplexity (B,) of samples `ids` (B, L) under a causal language model (in eval mode,
    called `model(ids)` -> logits (B, L, V), with `config.block_size`): exp of the
    mean next-token negative log-likelihood (nats) over positions 1..n-1 of each sample (MDLM's
    gen PPL, per sample). `classes`: only the first `classes` logits count (the ids text can hold;
    the special ids get no probability); None: all of them. `lengths` (B,): sample i is its first
    lengths[i] ids (the rest is ignored: a causal model's earlier predictions do not read it); a
    sample of fewer than 2 ids has no position to score and gets nan. Samples longer than the
    reference's block are scored in overlapping windows (see `next_token_nll`)."""
    nll = next_token_nll(reference_model, ids, autocast, classes)  # (B, L-1)
    limit = torch.tensor(lengths if lengths is not None else [ids.size(1)] * ids.size(0), device=nll.device)
    scored = torch.arange(nll.size(1), device=nll.device)[None, :] < (limit[:, None] - 1)  # (B, L-1)
    mean = torch.where(scored, nll, 0.0).sum(1) / scored.sum(1)  # 0 / 0 = nan for a sample of < 2 ids
    return mean.exp().cpu()


def next_token_nll(
    model: torch.nn.Module,
    ids: torch.Tensor,
    autocast: AbstractContextManager | None = None,
    classes: int | None = None,
) -> torch.Tensor:
    """-ln p(ids[:, t] | ids[:, :t]) for t = 1..L-1, as (B, L-1) float32 nats.

    Up to the model's block size of inputs is one forward pass. Longer samples are read in windows
    of a block that advance by half a block, and each window scores only the targets no earlier
    window scored, so every target is scored once, with at least half a block of context (the
    strided evaluation of Hugging Face's "Perplexity of fixed-length models").
    """
    ids = ids.to(next(model.parameters()).device)
    inputs, targets = ids[:, :-1], ids[:, 1:]  # input t predicts target t (= id t + 1)
    block, total = model.config.block_size, inputs.size(1)
    stride = max(1, block // 2)
    pieces, scored = [], 0  # targets before `scored` are done
    while scored < total:
        end = min(total, max(block, scored + stride))
        start = max(0, end - block)
        with autocast or nullcontext():
            logits = model(inputs[:, start:end])  # (B, end - start, V)
        logits = logits[:, scored - start :, :classes].float()  # the targets this window scores
        pieces.append(F.cross_entropy(logits.transpose(1, 2), targets[:, scored:end], reduction="none"))
        scored = end
    return torch.cat(pieces, dim=1) if pieces else inputs.new_zeros(inputs.shape, dtype=torch.float32)


def measure(records: list[dict], ids: torch.Tensor, vocab, reference=None, autocast=None) -> None:
    """Add each sample's `unigram_entropy` (nats) and, with a `reference` language model, its
    `gen_ppl` to its record, both over the ids its text shows (ids (B, L): up to the end of its
    document). The gen_ppl of a sample of one id (no next token to predict) is None."""
    shown = [document(row, vocab) for row in ids.tolist()]
    for record, row in zip(records, shown):
        record["unigram_entropy"] = unigram_entropy(row)
    if reference is None:
        return
    ppl = generative_perplexity(reference, ids, autocast, vocab.classes, [len(row) for row in shown])
    for record, value in zip(records, ppl.tolist()):
        record["gen_ppl"] = None if math.isnan(value) else value
