"""JSON that strict parsers read (JavaScript, Go, dashboards): a value that is not finite (NaN, an
infinite loss or gradient norm) is written as null (the curves read it back as NaN)."""

import json
import math


def finite(value):
    """`value` with every non-finite float, at any depth, replaced by None."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: finite(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite(item) for item in value]
    return value


def dumps(value, **options) -> str:
    """One strict JSON text (ValueError if anything non-finite were left)."""
    return json.dumps(finite(value), allow_nan=False, **options)
