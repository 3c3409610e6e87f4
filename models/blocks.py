"""The transformer block: pre-LayerNorm attention and MLP sublayers, each in a residual."""

import torch
from torch import nn

from .attention import SelfAttention
from .config import GPTConfig

LAYER_NORM_EPS = 1e-5


def layer_norm(config: GPTConfig) -> nn.LayerNorm:
    return nn.LayerNorm(config.n_embd, eps=LAYER_NORM_EPS, bias=config.bias)


class MLP(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd, bias=config.bias)
        self.gelu = nn.GELU()  # exact (erf) GELU, not the tanh approximation
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.c_proj(self.gelu(self.c_fc(x))))


class Block(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.ln_1 = layer_norm(config)
        self.attn = SelfAttention(config)
        self.ln_2 = layer_norm(config)
        self.mlp = MLP(config)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Pre-LN keeps the residual stream un-normalised, which trains stably without warmup
        # tricks; the trunk's final LayerNorm (ln_f) normalises it once at the end.
        x = x + self.attn(self.ln_1(x))
        x = x + self.mlp(self.ln_2(x))
        return x
