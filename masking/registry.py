"""Strategy lookup by config name, with config errors that name the offending key."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from masking.base import MaskingStrategy
from masking.corruption import Corruption
from masking.errors import MaskingConfigError
from masking.random import RandomMasking
from masking.span import SpanMasking
from masking.sticky import StickyMasking

STRATEGIES: dict[str, type[MaskingStrategy]] = {
    "sticky": StickyMasking,
    "random": RandomMasking,
    "span": SpanMasking,
}


def build_strategy(kind: str, **params: Any) -> MaskingStrategy:
    """Build a strategy from config values; `corruption` may be a Corruption, a mapping of its fields, or None."""
    if kind not in STRATEGIES:
        raise MaskingConfigError("type", "unknown masking strategy", ", ".join(STRATEGIES), kind)
    cls = STRATEGIES[kind]
    fields = dataclasses.fields(cls)
    names = [f.name for f in fields]
    for key in params:
        if key not in names:
            raise MaskingConfigError(key, f"unknown parameter for {kind} masking", ", ".join(names), params[key])
    for f in fields:
        required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        if required and f.name not in params:
            raise MaskingConfigError(f.name, f"missing parameter for {kind} masking", cls.ALLOWED[f.name])
    if isinstance(params.get("corruption"), Mapping):
        params["corruption"] = _build_corruption(params["corruption"])
    return cls(**params)


def _build_corruption(values: Mapping[str, Any]) -> Corruption:
    names = [f.name for f in dataclasses.fields(Corruption)]
    for key in values:
        if key not in names:
            raise MaskingConfigError(f"corruption.{key}", "unknown corruption parameter", ", ".join(names), values[key])
    return Corruption(**dict(values))
