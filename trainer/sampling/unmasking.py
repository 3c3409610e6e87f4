"""Iterative unmasking: masked-diffusion generation from an all-mask canvas.

Each step predicts every masked position at once and fills it with a drawn character; then, but for
the last step, it masks again as many generated positions as the schedule leaves masked after that
step. Which ones is the `remasking` rule: the least confident tokens (`low_confidence`, the score
s*U + (1-s)*(1-p) of the reference sampler, p the probability the token was drawn with, or the
judge's probability that it was replaced), random tokens (`random`), or random positions among
those just filled, so that a generated token stays (`none`: ancestral sampling of masked diffusion,
Sahoo et al. 2024, "Simple and Effective Masked Diffusion Language Models").
"""

from collections.abc import Callable

import torch

from trainer.sampling.decoding import RowNoise, draw, filtered_logits
from trainer.sampling.settings import Remasking, SamplingConfig

# (B, L) ids of the canvas with every generated position filled -> (B, L) probability that each
# position holds a replaced (wrong) character: a token classifier's judgement
Judge = Callable[[torch.Tensor], torch.Tensor]


@torch.no_grad()
def iterative_unmasking(
    model: torch.nn.Module,
    canvas: torch.Tensor,
    generate: torch.Tensor,
    mask_id: int,
    base_size: int,
    settings: SamplingConfig,
    noise: RowNoise,
    judge: Judge | None = None,
) -> torch.Tensor:
    """Fill the positions `generate` (B, L) bool of `canvas` (B, L) ids; every other id stays.

    Every row generates the same number of positions (a shared prompt or template). Returns (B, L)
    ids with no mask left; only base ids are drawn.
    """
    total = int(generate[0].sum())  # the same in every row; known on the host from the CPU template
    ids = canvas.masked_fill(generate, mask_id)
    confidence = torch.zeros(ids.shape, device=ids.device)
    for ratio in settings.mask_ratios():
        masked = ids == mask_id
        logits = filtered_logits(model(ids), base_size, settings)  # (B, L, M)
        drawn = draw(logits, noise.uniform(*ids.shape[1:], base_size))
        ids = torch.where(masked, drawn, ids)
        # how sure the model was of the token drawn (its distribution at temperature 1)
        p_drawn = model_probability(logits * settings.temperature, drawn)
        confidence = torch.where(masked, p_drawn, confidence)
        keep_masked = round(ratio * total)
        if keep_masked == 0:
            continue
        score = remasking_score(settings, noise, confidence, ids, judge)
        candidates = generate & masked if settings.remasking == Remasking.none else generate
        chosen = score.masked_fill(~candidates, float("-inf")).topk(keep_masked, dim=1).indices
        ids = ids.scatter(1, chosen, mask_id)
    return ids


def model_probability(logits: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """softmax(logits) (B, L, M) at `ids` (B, L); excluded (-inf) ids have probability 0."""
    return logits.softmax(-1).gather(-1, ids[..., None]).squeeze(-1)


def remasking_score(
    settings: SamplingConfig, noise: RowNoise, confidence: torch.Tensor, ids: torch.Tensor, judge: Judge | None
) -> torch.Tensor:
    """(B, L): the positions with the highest scores are masked again."""
    uniform = noise.uniform(ids.size(1))
    if settings.remasking != Remasking.low_confidence:
        return uniform
    doubt = judge(ids) if judge is not None else 1 - confidence
    return settings.randomness * uniform + (1 - settings.randomness) * doubt
