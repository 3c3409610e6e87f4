"""Drawing characters from a model's logits, and autoregressive sampling for language models.

Every sample (row) has its own seeded generator, so sample i of a command is the same whether it
is drawn alone or in a batch, and a command repeated with the same seed gives the same samples.
Only base ids are ever drawn: the mask, [CLS] and the reserved ids get no probability.
"""

import torch

from trainer.sampling.settings import SamplingConfig


class RowNoise:
    """Uniform noise for a batch of samples: row i draws from its own generator, seeded `seed + i`."""

    def __init__(self, seed: int, rows: int, device: torch.device):
        self.device = device
        self.generators = [torch.Generator(device=device).manual_seed(seed + i) for i in range(rows)]

    def uniform(self, *shape: int) -> torch.Tensor:
        """(rows, *shape) floats in [0, 1)."""
        return torch.stack([torch.rand(shape, generator=g, device=self.device) for g in self.generators])


def filtered_logits(logits: torch.Tensor, base_size: int, settings: SamplingConfig) -> torch.Tensor:
    """(..., V) logits -> (..., M) float32 logits over the base ids, divided by the temperature, with
    -inf outside the top-k and the top-p (nucleus, Holtzman et al. 2020) sets; the most likely id
    always stays."""
    logits = logits[..., :base_size].float()
    # from the largest logit down: a tiny temperature sends the others to -inf, never the top to inf
    logits = (logits - logits.amax(-1, keepdim=True)) / settings.temperature
    if settings.top_k is not None and settings.top_k < base_size:
        kth = logits.topk(settings.top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if settings.top_p < 1:
        ordered, order = logits.sort(dim=-1, descending=True)
        cumulative = ordered.softmax(-1).cumsum(-1)
        # drop an id when the ids before it already hold top_p of the probability
        drop = (cumulative - ordered.softmax(-1)) >= settings.top_p
        logits = logits.masked_fill(drop.scatter(-1, order, drop), float("-inf"))
    return logits


def draw(logits: torch.Tensor, uniform: torch.Tensor) -> torch.Tensor:
    """Ids drawn from softmax(logits) with the Gumbel-max trick: argmax(logits + Gumbel(u)).

    logits: (..., M) with -inf for excluded ids; uniform: the same shape, in [0, 1). Returns (...)."""
    gumbel = -torch.log(-torch.log(uniform.clamp(min=1e-20, max=1 - 1e-7)))
    return (logits + gumbel).argmax(-1)


@torch.no_grad()
def autoregressive(
    model: torch.nn.Module,
    context: torch.Tensor,
    length: int,
    base_size: int,
    settings: SamplingConfig,
    noise: RowNoise,
) -> torch.Tensor:
    """Append `length` drawn characters to `context` (B, P) one at a time; returns (B, P + length).

    The model sees at most its block size of the latest characters (nanoGPT's cropping).
    """
    block_size = model.config.block_size
    ids = context
    for _ in range(length):
        logits = model(ids[:, -block_size:])[:, -1]  # (B, V): only the last position predicts
        choice = draw(filtered_logits(logits, base_size, settings), noise.uniform(base_size))
        ids = torch.cat([ids, choice[:, None]], dim=1)
    return ids
