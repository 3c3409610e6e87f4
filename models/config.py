"""Model configuration: the one place that decides parameter shapes and semantics.

`ModelConfig` holds the knobs of the `model` config group, each with its domain (annotated_types
constraints, read by the trainer's config validator); `GPTConfig` adds what the training mode and
the data decide (vocabulary, block size, attention, head). Rules that tie two fields together are
checked in `__post_init__`.
"""

from dataclasses import dataclass, fields
from enum import Enum
from typing import Annotated

from annotated_types import Ge, Gt, Interval


class Positions(str, Enum):
    rope = "rope"  # rotary embeddings (NeoX half-rotation)
    learned = "learned"  # absolute position embeddings


class Attention(str, Enum):
    causal = "causal"
    bidirectional = "bidirectional"


class Head(str, Enum):
    lm = "lm"  # V logits per position, tied to the token embedding
    token_classifier = "token_classifier"  # num_classes logits per position
    sequence_scorer = "sequence_scorer"  # one sigmoid score from the [CLS] position


class ModelConfigError(ValueError):
    """An inconsistent model setting: names the field and what is allowed."""

    def __init__(self, key: str, problem: str, allowed: str):
        self.key, self.problem, self.allowed = key, problem, allowed
        super().__init__(f"{key}: {problem}; allowed: {allowed}")


@dataclass
class ModelConfig:
    """The backbone's size and options (the `model` config group)."""

    n_layer: Annotated[int, Ge(1)] = 4
    n_head: Annotated[int, Ge(1)] = 4
    n_embd: Annotated[int, Ge(1)] = 128
    dropout: Annotated[float, Interval(ge=0, lt=1)] = 0.0
    bias: bool = False
    positions: Positions = Positions.rope
    rope_base: Annotated[float, Gt(0)] = 10000.0

    def __post_init__(self):
        self.validate()

    def validate(self) -> None:
        """Raise ModelConfigError (a ValueError) on settings that contradict each other."""
        if self.n_embd % self.n_head:
            raise ModelConfigError(
                "n_head", f"n_embd={self.n_embd} is not divisible by {self.n_head}", "a divisor of n_embd"
            )
        if self.positions == Positions.rope and self.head_dim % 2:
            raise ModelConfigError(
                "n_head",
                f"rope needs an even head size, but n_embd / n_head = {self.n_embd} / {self.n_head} = {self.head_dim}",
                "an n_head that leaves an even head size, or positions=learned",
            )

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head

    def build(self, vocab_size: int, block_size: int, attention: Attention, head: Head, num_classes: int = 2):
        """A freshly initialised GPT of this size for the given vocabulary, window and head."""
        from models.gpt import GPT  # gpt.py imports this module

        shape = {f.name: getattr(self, f.name) for f in fields(ModelConfig)}
        return GPT(
            GPTConfig(
                vocab_size=vocab_size,
                block_size=block_size,
                attention=attention,
                head=head,
                num_classes=num_classes,
                **shape,
            )
        )


# Fields that change parameter shapes or what the parameters mean. A checkpoint can only be
# loaded into a model whose config agrees on all of these; dropout and rope_base are left out
# because they can differ between runs without invalidating trained weights.
ARCHITECTURE_KEYS = (
    "vocab_size",
    "block_size",
    "n_layer",
    "n_head",
    "n_embd",
    "bias",
    "attention",
    "positions",
    "head",
    "num_classes",
)

# The subset that decides the trunk's parameter shapes: what a trunk transfer must agree on.
TRUNK_KEYS = ("vocab_size", "n_layer", "n_head", "n_embd", "bias", "positions")


@dataclass
class GPTConfig(ModelConfig):
    """Everything a GPT is built from: the model knobs plus what the mode and the data decide."""

    vocab_size: int = 0  # model vocabulary V: base characters plus any special ids (e.g. a mask id)
    block_size: int = 256
    attention: Attention = Attention.bidirectional
    head: Head = Head.lm
    num_classes: int = 2  # token_classifier only

    def validate(self) -> None:
        for name in ("vocab_size", "block_size", "n_layer", "n_head", "n_embd"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ModelConfigError(name, f"{value!r} is not a positive integer", "an integer >= 1")
        for name, kind in (("attention", Attention), ("head", Head), ("positions", Positions)):
            try:
                setattr(self, name, kind(getattr(self, name)))
            except ValueError:
                allowed = ", ".join(k.value for k in kind)
                raise ModelConfigError(name, f"{getattr(self, name)!r} is not a choice", allowed) from None
        super().validate()

    def architecture(self) -> dict:
        """The settings a checkpoint must share with this config to be loadable into it (plain data)."""
        return {name: _plain(getattr(self, name)) for name in ARCHITECTURE_KEYS}

    def trunk(self) -> dict:
        """The settings another model's trunk must share with this config to be transferred."""
        return {name: _plain(getattr(self, name)) for name in TRUNK_KEYS}


def _plain(value):
    return value.value if isinstance(value, Enum) else value


# Guard against the key list drifting away from the dataclass when fields are renamed.
assert set(ARCHITECTURE_KEYS) <= {f.name for f in fields(GPTConfig)}
