"""Multi-head self-attention with an optional causal mask and optional RoPE."""

import torch
import torch.nn.functional as F
from torch import nn

from .config import GPTConfig
from .rope import RotaryEmbedding


class SelfAttention(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.n_head = config.n_head
        self.head_dim = config.head_dim
        self.is_causal = config.attention == "causal"
        self.dropout = config.dropout
        # One fused projection for q, k and v: a single larger matmul is faster than three.
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd, bias=config.bias)
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
        self.resid_dropout = nn.Dropout(config.dropout)
        self.rotary = (
            RotaryEmbedding(config.head_dim, config.block_size, config.rope_base)
            if config.positions == "rope"
            else None
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = self.c_attn(x).split(C, dim=-1)
        # (B, T, C) -> (B, H, T, head_dim), the layout scaled_dot_product_attention expects.
        q, k, v = (t.view(B, T, self.n_head, self.head_dim).transpose(1, 2) for t in (q, k, v))
        if self.rotary is not None:
            q, k = self.rotary(q, k)
        y = F.scaled_dot_product_attention(
            q,
            k,
            v,
            dropout_p=self.dropout if self.training else 0.0,
            is_causal=self.is_causal,
        )
        y = y.transpose(1, 2).contiguous().view(B, T, C)
        return self.resid_dropout(self.c_proj(y))

    def crop_block_size(self, block_size: int) -> None:
        if self.rotary is not None:
            self.rotary.resize(block_size)
