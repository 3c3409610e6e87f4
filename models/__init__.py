"""Transformer language models in plain PyTorch."""

from .config import Attention, GPTConfig, Head, ModelConfig, ModelConfigError, Positions
from .gpt import GPT, estimate_mfu

__all__ = ["GPT", "Attention", "GPTConfig", "Head", "ModelConfig", "ModelConfigError", "Positions", "estimate_mfu"]
