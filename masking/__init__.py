"""Masking and corruption strategies for masked-diffusion (unmasking) training; depends on torch only."""

from masking.base import MaskingResult, MaskingStrategy
from masking.corruption import Corruption
from masking.elbo import ElboMasking
from masking.errors import MaskingConfigError
from masking.random import RandomMasking
from masking.registry import STRATEGIES, strategy_class
from masking.span import SpanMasking
from masking.sticky import StickyMasking

__all__ = [
    "STRATEGIES",
    "Corruption",
    "ElboMasking",
    "MaskingConfigError",
    "MaskingResult",
    "MaskingStrategy",
    "RandomMasking",
    "SpanMasking",
    "StickyMasking",
    "strategy_class",
]
