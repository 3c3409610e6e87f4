"""Configuration errors for masking strategies, shaped for one-line console reports."""

from __future__ import annotations

import numbers
from typing import Any

NO_VALUE = object()


class MaskingConfigError(ValueError):
    """An invalid masking parameter: names the key, the offending value and what is allowed."""

    def __init__(self, key: str, reason: str, allowed: str, value: Any = NO_VALUE) -> None:
        self.key = key
        self.allowed = allowed
        self.reason = reason
        self.value = value
        # A missing parameter has no value to show; None can be a real (wrong) value, hence the sentinel.
        where = key if value is NO_VALUE else f"{key}={value!r}"
        super().__init__(f"{where}: {reason}; allowed: {allowed}")


def check_number(key: str, value: Any, allowed: str, *, low: float, high: float, low_open: bool = False) -> None:
    """Raise unless `value` is a real number (bools excluded) in [low, high], or (low, high] if low_open."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise MaskingConfigError(key, "not a number", allowed, value)
    # Written as a positive range test so NaN fails too.
    above_low = low < value if low_open else low <= value
    if not (above_low and value <= high):
        raise MaskingConfigError(key, "out of range", allowed, value)
