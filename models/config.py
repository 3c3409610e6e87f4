"""Model configuration: the one place that decides parameter shapes and semantics."""

from dataclasses import dataclass, fields

ATTENTION_KINDS = ("causal", "bidirectional")
POSITION_KINDS = ("rope", "learned")
HEADS = ("lm", "token_classifier", "sequence_scorer")

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
class GPTConfig:
    vocab_size: int  # model vocabulary V: base characters plus any special ids (e.g. a mask id)
    block_size: int = 256
    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 128
    dropout: float = 0.0
    bias: bool = False
    attention: str = "bidirectional"  # "causal" | "bidirectional"
    positions: str = "rope"  # "rope" | "learned"
    rope_base: float = 10000.0
    head: str = "lm"  # "lm" (tied to the embedding) | "token_classifier" | "sequence_scorer"
    num_classes: int = 2  # token_classifier only

    def __post_init__(self):
        self.validate()

    def validate(self) -> None:
        """Raise ValueError on any inconsistent setting, with a message that names it."""
        for name in ("vocab_size", "block_size", "n_layer", "n_head", "n_embd"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if self.attention not in ATTENTION_KINDS:
            raise ValueError(f"attention must be one of {ATTENTION_KINDS}, got {self.attention!r}")
        if self.head not in HEADS:
            raise ValueError(f"head must be one of {HEADS}, got {self.head!r}")
        if self.positions not in POSITION_KINDS:
            raise ValueError(f"positions must be one of {POSITION_KINDS}, got {self.positions!r}")
        if self.n_embd % self.n_head != 0:
            raise ValueError(f"n_embd ({self.n_embd}) must be divisible by n_head ({self.n_head})")
        if self.positions == "rope" and self.head_dim % 2 != 0:
            raise ValueError(
                f"rope needs an even head dim, but n_embd / n_head = {self.n_embd} / {self.n_head} = {self.head_dim}"
            )
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout!r}")
        if self.rope_base <= 0:
            raise ValueError(f"rope_base must be positive, got {self.rope_base!r}")

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head

    def architecture(self) -> dict:
        """The settings a checkpoint must share with this config to be loadable into it."""
        return {name: getattr(self, name) for name in ARCHITECTURE_KEYS}

    def trunk(self) -> dict:
        """The settings another model's trunk must share with this config to be transferred."""
        return {name: getattr(self, name) for name in TRUNK_KEYS}


# Guard against the key list drifting away from the dataclass when fields are renamed.
assert set(ARCHITECTURE_KEYS) <= {f.name for f in fields(GPTConfig)}
