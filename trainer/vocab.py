"""The vocabulary (a tokenizer's ids, then the special ids) and the `tokenizer` config group.

Ids 0..M-1 are the tokenizer's (M = `base_size`). The special ids follow, through this object and
never as numbers: the end-of-document id (where the corpus has documents), then mask and cls, then a
reserved block, so that a checkpoint of one mode can initialise a model of another. A char corpus of
one document has no end-of-document id, which keeps the ids of every run before documents existed.
"""

import functools
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Annotated, ClassVar

import numpy as np
from annotated_types import Interval

from trainer.errors import ConfigError
from trainer.tokenization import (
    ByteTokenizer,
    CharTokenizer,
    TiktokenTokenizer,
    Tokenizer,
    TokenizerLoadError,
    load_tiktoken,
    load_tokenizer_json,
    tokenizer_from_dict,
)

RESERVED_IDS = 15  # end of document, mask, cls and room for future special tokens
MAX_IDS = 2**32 - RESERVED_IDS  # token files hold uint32 ids at most


@dataclass(frozen=True)
class Vocabulary:
    tokenizer: Tokenizer
    documents: bool = False  # whether an end-of-document id follows the tokenizer's ids

    @classmethod
    def from_text(cls, text: str) -> "Vocabulary":
        """The char vocabulary of one document of text."""
        return cls(CharTokenizer(tuple(sorted(set(text)))))

    @property
    def base_size(self) -> int:
        """M: the tokenizer's ids 0..M-1."""
        return self.tokenizer.size

    @property
    def classes(self) -> int:
        """The ids a position of text can hold (the tokenizer's and the end of document), 0..classes-1:
        what a model predicts and a sampler draws."""
        return self.base_size + self.documents

    @property
    def size(self) -> int:
        """V: the model's vocabulary, the tokenizer's ids plus the reserved special block."""
        return self.base_size + RESERVED_IDS

    @property
    def eod_id(self) -> int | None:
        return self.base_size if self.documents else None

    @property
    def mask_id(self) -> int:
        return self.classes

    @property
    def cls_id(self) -> int:
        return self.classes + 1

    @property
    def token_dtype(self) -> type:
        """The smallest unsigned type that holds every id: uint16 where they fit, else uint32."""
        return np.uint16 if self.size <= 2**16 else np.uint32

    @property
    def kind(self) -> str:
        return self.tokenizer.kind

    def encode(self, text: str) -> np.ndarray:
        """(n,) int64 ids of a text (no end-of-document id)."""
        return self.tokenizer.encode(text)

    def decode(self, ids) -> str:
        """Text ids become their text; the mask shows as '_', the end of a document as a blank line and
        other specials as '?'."""
        specials = {self.mask_id: "_", self.eod_id: "\n\n"}
        pieces, run = [], []
        for i in map(int, ids):
            if i < self.base_size:
                run.append(i)
                continue
            pieces.append(self.tokenizer.decode(run))
            pieces.append(specials.get(i, "?"))
            run = []
        return "".join(pieces) + self.tokenizer.decode(run)

    def token_bytes(self) -> np.ndarray:
        """(size,) UTF-8 bytes of each id's text; 0 for the special ids."""
        lengths = np.zeros(self.size, dtype=np.int64)
        lengths[: self.base_size] = self.tokenizer.token_bytes()
        return lengths

    def describe(self) -> str:
        return self.tokenizer.describe() + (" + end of document" if self.documents else "")

    def to_dict(self) -> dict:
        return {
            "tokenizer": self.tokenizer.to_dict(),
            "documents": self.documents,
            "base_size": self.base_size,
            "size": self.size,
            "eod_id": self.eod_id,
            "mask_id": self.mask_id,
            "cls_id": self.cls_id,
        }

    @classmethod
    def from_dict(cls, data: dict) -> "Vocabulary":
        """A vocabulary as `to_dict` wrote it, or as the first format did (its char list at the top)."""
        if "tokenizer" not in data:
            return cls(CharTokenizer(tuple(data["chars"])))
        return cls(tokenizer_from_dict(data["tokenizer"]), data["documents"])


@dataclass(frozen=True)
class GivenTokenizer:
    """A checkpoint's tokenizer, to read a corpus it was not trained on (zero-shot evaluation); it
    stands where a `tokenizer` config would."""

    tokenizer: Tokenizer
    trained: ClassVar[bool] = False

    def settings(self) -> dict:
        return {"given": self.tokenizer.to_dict()}

    def load(self) -> Tokenizer:
        return self.tokenizer


class TokenizerName(str, Enum):
    char = "char"
    byte = "byte"
    bpe = "bpe"
    pretrained = "pretrained"


TOKENIZERS: dict[str, type] = {}


@dataclass
class TokenizerConfig:
    """The `tokenizer` config group: one subclass (and conf/tokenizer/<name>.yaml) per option."""

    name: TokenizerName = TokenizerName.char
    trained: ClassVar[bool] = False  # built from the corpus's training split (char, bpe)

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        TOKENIZERS[cls.__dict__["name"].value] = cls

    def __post_init__(self):
        expected = type(self).__dataclass_fields__["name"].default
        if self.name != expected:
            raise ConfigError(
                "tokenizer.name", f"{self.name.value!r} names another tokenizer", f"tokenizer={self.name.value}"
            )

    def settings(self) -> dict:
        """What the prepared corpus depends on (part of its cache key)."""
        return {"name": self.name.value}

    def load(self) -> Tokenizer:
        """A tokenizer that needs no corpus (byte, pretrained); ConfigError if it cannot be loaded."""
        raise NotImplementedError(f"tokenizer={self.name.value} is built from the corpus")


@dataclass
class CharTokenizerConfig(TokenizerConfig):
    """One id per distinct character of the corpus (the default)."""

    name: TokenizerName = TokenizerName.char
    trained: ClassVar[bool] = True


@dataclass
class ByteTokenizerConfig(TokenizerConfig):
    """UTF-8 bytes: 256 ids, any text."""

    name: TokenizerName = TokenizerName.byte

    def load(self) -> Tokenizer:
        return ByteTokenizer()


@dataclass
class BpeTokenizerConfig(TokenizerConfig):
    """A byte-level BPE trained on the training split, once per corpus (kept with the prepared data)."""

    name: TokenizerName = TokenizerName.bpe
    trained: ClassVar[bool] = True
    # ids: the 256 byte symbols plus merges (fewer when the corpus has fewer pairs to merge)
    vocab_size: Annotated[int, Interval(ge=257, le=MAX_IDS)] = 4096
    min_frequency: Annotated[int, Interval(ge=1, le=2**31 - 1)] = 2  # occurrences a pair needs to be merged

    def settings(self) -> dict:
        return {"name": self.name.value, "vocab_size": self.vocab_size, "min_frequency": self.min_frequency}


@dataclass
class PretrainedTokenizerConfig(TokenizerConfig):
    """A ready tokenizer: a Hugging Face tokenizer.json file, or a tiktoken encoding (gpt2, ...)."""

    name: TokenizerName = TokenizerName.pretrained
    path: str | None = None  # a tokenizer.json file
    encoding: str | None = None  # a tiktoken encoding, read from tiktoken's local cache

    def __post_init__(self):
        super().__post_init__()
        if (self.path is None) == (self.encoding is None):
            raise ConfigError(
                "tokenizer.path",
                "give a tokenizer.json path or a tiktoken encoding, one of them",
                "tokenizer.path=FILE or tokenizer.encoding=NAME",
            )
        self.load()  # refuse a missing or broken tokenizer with the config

    def settings(self) -> dict:
        return {"name": self.name.value, "tokenizer": self.load().to_dict()}

    def load(self) -> Tokenizer:
        return _pretrained(self.path, self.encoding)


@functools.cache
def _pretrained(path: str | None, encoding: str | None) -> Tokenizer:
    key = "tokenizer.path" if path is not None else "tokenizer.encoding"
    try:
        if path is not None:
            tokenizer = load_tokenizer_json(str(Path(path).expanduser()))
        else:
            load_tiktoken(encoding)  # raises now if it is not available
            tokenizer = TiktokenTokenizer(encoding)
    except TokenizerLoadError as err:
        raise ConfigError(key, err.problem, err.allowed) from None
    if tokenizer.size > MAX_IDS:
        raise ConfigError(key, f"{tokenizer.size:,} ids do not fit uint32 token files", "a smaller tokenizer")
    return tokenizer
