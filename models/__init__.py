"""Transformer language models in plain PyTorch."""

from .config import GPTConfig
from .gpt import GPT, estimate_mfu

__all__ = ["GPT", "GPTConfig", "estimate_mfu"]
