"""Strategy lookup by the name a config uses for it (`type`)."""

from __future__ import annotations

from masking.base import MaskingStrategy
from masking.elbo import ElboMasking
from masking.errors import MaskingConfigError
from masking.random import RandomMasking
from masking.span import SpanMasking
from masking.sticky import StickyMasking

STRATEGIES: dict[str, type[MaskingStrategy]] = {
    cls.__dataclass_fields__["type"].default: cls for cls in (StickyMasking, RandomMasking, SpanMasking, ElboMasking)
}


def strategy_class(name: object) -> type[MaskingStrategy]:
    """The strategy class called `name` in configs; MaskingConfigError (key `type`) for an unknown one."""
    if name not in STRATEGIES:
        raise MaskingConfigError("type", "unknown masking strategy", ", ".join(STRATEGIES), name)
    return STRATEGIES[name]
