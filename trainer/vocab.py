"""The character vocabulary and its special ids.

Special ids are appended after the base characters (never hard-coded numbers), with a reserved
block so that a checkpoint of one mode can initialise a model of another.
"""

from dataclasses import dataclass

import numpy as np

RESERVED_IDS = 15  # mask, cls and room for future special tokens


@dataclass(frozen=True)
class Vocabulary:
    chars: tuple[str, ...]

    @classmethod
    def from_text(cls, text: str) -> "Vocabulary":
        return cls(tuple(sorted(set(text))))

    @property
    def base_size(self) -> int:
        """M: the number of real characters; ids 0..M-1."""
        return len(self.chars)

    @property
    def size(self) -> int:
        """V: the model's vocabulary, base characters plus the reserved special block."""
        return self.base_size + RESERVED_IDS

    @property
    def mask_id(self) -> int:
        return self.base_size

    @property
    def cls_id(self) -> int:
        return self.base_size + 1

    def encode(self, text: str) -> np.ndarray:
        lookup = {ch: i for i, ch in enumerate(self.chars)}
        return np.fromiter((lookup[ch] for ch in text), dtype=np.uint16, count=len(text))

    def decode(self, ids) -> str:
        """Base ids become their characters; the mask shows as '_' and other specials as '?'."""
        specials = {self.mask_id: "_"}
        return "".join(self.chars[i] if i < self.base_size else specials.get(i, "?") for i in map(int, ids))

    def to_dict(self) -> dict:
        return {
            "chars": list(self.chars),
            "base_size": self.base_size,
            "size": self.size,
            "mask_id": self.mask_id,
            "cls_id": self.cls_id,
        }

    @classmethod
    def from_dict(cls, data: dict) -> "Vocabulary":
        return cls(tuple(data["chars"]))
