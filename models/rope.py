"""Rotary position embeddings (RoPE), NeoX layout: the head dim is split into two halves that
are rotated against each other, rather than rotating interleaved even/odd pairs."""

import torch
from torch import nn


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    """(x1, x2) -> (-x2, x1) over the last dim, so x*cos + rotate_half(x)*sin is a rotation."""
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


class RotaryEmbedding(nn.Module):
    """Applies RoPE to queries and keys of shape (B, H, T, head_dim) at positions 0..T-1."""

    def __init__(self, head_dim: int, max_seq_len: int, base: float = 10000.0):
        super().__init__()
        if head_dim % 2 != 0:
            raise ValueError(f"rope needs an even head_dim, got {head_dim}")
        inv_freq = 1.0 / (base ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim))
        # Non-persistent: these are pure functions of the config, so they stay out of
        # checkpoints and a checkpoint never pins the block size of the caches.
        self.register_buffer("inv_freq", inv_freq, persistent=False)
        self.register_buffer("cos", torch.empty(0), persistent=False)
        self.register_buffer("sin", torch.empty(0), persistent=False)
        self.resize(max_seq_len)

    def resize(self, max_seq_len: int) -> None:
        """(Re)build the cos/sin caches for positions 0..max_seq_len-1."""
        positions = torch.arange(max_seq_len, dtype=torch.float32, device=self.inv_freq.device)
        freqs = torch.outer(positions, self.inv_freq.float())  # (T, head_dim / 2)
        angles = torch.cat((freqs, freqs), dim=-1)  # (T, head_dim): both halves share angles
        self.cos = angles.cos()
        self.sin = angles.sin()

    @property
    def max_seq_len(self) -> int:
        return self.cos.size(0)

    def forward(self, q: torch.Tensor, k: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        seq_len = q.size(-2)
        # Casting to q's dtype keeps mixed-precision (autocast) attention in one dtype.
        cos = self.cos[:seq_len].to(q.dtype)
        sin = self.sin[:seq_len].to(q.dtype)
        return q * cos + rotate_half(q) * sin, k * cos + rotate_half(k) * sin
