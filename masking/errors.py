"""Configuration errors for masking strategies, shaped for one-line console reports."""

from __future__ import annotations

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

    @property
    def problem(self) -> str:
        return self.reason if self.value is NO_VALUE else f"{self.value!r}: {self.reason}"
