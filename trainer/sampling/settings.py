"""How samples are drawn: the knobs shared by `python -m trainer.sample` and the samples a run
writes at each evaluation (the `sample` section of the run config).

A mode reads only some of them (`ModeConfig.sample_keys`): a language model samples next tokens,
an unmasking model also unmasks iteratively, the classifiers show predictions on validation rows.
"""

import math
from dataclasses import dataclass, fields
from enum import Enum
from typing import Annotated, Any

from annotated_types import Ge, Gt, Interval

from trainer.errors import RelativeConfigError

MAX_SAMPLES = 1024
MAX_LENGTH = 100_000  # characters of one sample (a language model draws them one forward each)


class Remasking(str, Enum):
    low_confidence = "low_confidence"  # the least confident generated tokens go back to the mask
    random = "random"  # generated tokens chosen at random go back to the mask
    none = "none"  # a generated token stays; the masked positions left are chosen at random


class Sampling(str, Enum):
    """How a mode's model writes text (`ModeConfig.sampling`)."""

    autoregressive = "autoregressive"  # one next character at a time
    unmasking = "unmasking"  # iterative unmasking from an all-mask canvas


class Schedule(str, Enum):
    linear = "linear"  # the masked fraction after step i of S: 1 - i/S
    cosine = "cosine"  # cos(pi/2 * i/S): few tokens early, many late (MaskGIT)


@dataclass
class SamplingConfig:
    num_samples: Annotated[int, Interval(ge=0, le=MAX_SAMPLES)] = 2  # 0: no samples
    # characters generated; null: the block size minus the prompt
    length: Annotated[int, Interval(ge=1, le=MAX_LENGTH)] | None = None
    # sample i is drawn from seed + i; null: the run's seed (python -m trainer.sample: a random one)
    seed: Annotated[int, Interval(ge=0, le=2**62)] | None = 0
    temperature: Annotated[float, Gt(0)] = 1.0
    top_k: Annotated[int, Ge(1)] | None = None  # keep the k most likely characters (1: greedy)
    top_p: Annotated[float, Interval(gt=0, le=1)] = 1.0  # keep the smallest set with this probability
    prompt: str = ""  # the text the samples start with (it stays)
    # iterative unmasking
    steps: Annotated[int, Ge(1)] = 32
    schedule: Any = "linear"  # linear, cosine, or the masked fractions after steps 1..steps-1
    remasking: Remasking = Remasking.low_confidence
    randomness: Annotated[float, Interval(ge=0, le=1)] = 0.0  # low_confidence's score: s*U + (1-s)*(1-p)
    # infill: each `_` is a position to generate (char and byte vocabularies), `{n}` is n tokens to
    # generate (bpe, pretrained); the rest of the text stays
    template: str | None = None
    # a language_model checkpoint (or run folder) of the same vocabulary: each sample's generative
    # perplexity under it (gen_ppl), beside its unigram entropy
    reference: str | None = None

    def __post_init__(self):
        self.remasking = Remasking(self.remasking)
        self.schedule = _schedule(self.schedule, self.steps)
        if self.template is not None:
            if self.length is not None:
                raise RelativeConfigError(
                    "length", "is set by the template (its positions to fill)", "null with a template"
                )
        if self.randomness > 0 and self.remasking != Remasking.low_confidence:
            raise RelativeConfigError(
                "randomness",
                f"mixes noise into low_confidence's scores; remasking={self.remasking.value} reads no score",
                "0, or remasking=low_confidence",
            )

    def changed(self) -> list[str]:
        """The sampling keys whose values differ from their defaults."""
        return [f.name for f in fields(SamplingConfig) if getattr(self, f.name) != _default(type(self), f.name)]

    def unread(self, sampling: "Sampling | None") -> list[str]:
        """The keys changed from their defaults that a mode sampling this way does not read."""
        return [key for key in self.changed() if key not in SAMPLE_KEYS[sampling]]

    def mask_ratios(self) -> list[float]:
        """The masked fraction of the generated positions after each step; the last is 0."""
        if isinstance(self.schedule, list):
            return [*self.schedule, 0.0]
        fraction = [i / self.steps for i in range(1, self.steps + 1)]
        if self.schedule == Schedule.cosine:
            return [math.cos(math.pi / 2 * f) if f < 1 else 0.0 for f in fraction]
        return [1 - f for f in fraction]

    def describe(self, keys) -> dict:
        """The settings of `keys` as plain values, for printing and records."""
        plain = {}
        for key in keys:
            value = getattr(self, key)
            plain[key] = value.value if isinstance(value, Enum) else value
        return plain


def _default(schema: type, name: str) -> Any:
    field = schema.__dataclass_fields__[name]
    return field.default_factory() if callable(field.default_factory) else field.default


def _schedule(value: Any, steps: int) -> Schedule | list[float]:
    allowed = f"linear, cosine, or {steps - 1} decreasing fractions in [0, 1) (steps - 1 of them)"
    if isinstance(value, (list, tuple)):
        ratios = list(value)
        if len(ratios) != steps - 1:
            raise RelativeConfigError("schedule", f"lists {len(ratios)} fractions for steps={steps}", allowed)
        if not all(isinstance(r, (int, float)) and not isinstance(r, bool) and 0 <= r < 1 for r in ratios):
            raise RelativeConfigError("schedule", f"{ratios} holds a value outside [0, 1)", allowed)
        if any(later > earlier for earlier, later in zip(ratios, ratios[1:])):
            raise RelativeConfigError("schedule", f"{ratios} is not decreasing", allowed)
        return [float(r) for r in ratios]
    try:
        return Schedule(value.value if isinstance(value, Enum) else value)
    except ValueError:
        raise RelativeConfigError("schedule", f"{value!r} is not a schedule", allowed) from None


# The keys each way of sampling reads; another key changed from its default is refused. A mode
# without a sampling (the classifiers) shows its predictions on the first validation rows.
AUTOREGRESSIVE_KEYS = ("num_samples", "length", "seed", "temperature", "top_k", "top_p", "prompt", "reference")
SAMPLE_KEYS = {
    Sampling.autoregressive: AUTOREGRESSIVE_KEYS,
    Sampling.unmasking: (*AUTOREGRESSIVE_KEYS, "steps", "schedule", "remasking", "randomness", "template"),
    None: ("num_samples",),
}
