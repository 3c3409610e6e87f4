"""Tokenizers: text to base ids and back. The vocabulary (trainer/vocab.py) appends the special ids
(end of document, mask, cls, a reserved block) after a tokenizer's ids.

char: the corpus's distinct characters, sorted (the ids of every earlier run). byte: the 256 values
of UTF-8 bytes, any text. bpe: a byte-level BPE trained on the training split with Hugging Face
`tokenizers`. pretrained: a `tokenizer.json` file, or a tiktoken encoding from tiktoken's local cache.
A tokenizer is plain data (`to_dict` / `tokenizer_from_dict`): every checkpoint and prepared corpus
carries its own, so sampling, evaluation, transfer and resume use exactly the one it was trained with.

The functions here import only numpy and the tokenizer libraries: preparation's worker processes
load this module alone.
"""

import functools
import hashlib
from dataclasses import dataclass

import numpy as np


class TokenizerLoadError(Exception):
    """A tokenizer that cannot be loaded: (problem, allowed); the caller names the key."""

    def __init__(self, problem: str, allowed: str):
        self.problem, self.allowed = problem, allowed
        super().__init__(problem)


class UnknownCharacter(ValueError):
    """A character a char vocabulary has no id for (a corpus read with another corpus's vocabulary)."""

    def __init__(self, character: str):
        super().__init__(character)
        self.character = character


@dataclass(frozen=True)
class CharTokenizer:
    """One id per distinct character of the corpus, in code point order."""

    chars: tuple[str, ...]
    kind = "char"

    @functools.cached_property
    def _ids_by_code_point(self) -> np.ndarray:
        """A table from code point to id (-1: no id), for a gather instead of a search."""
        table = np.full(max(map(ord, self.chars), default=0) + 1, -1, dtype=np.int64)
        table[[ord(c) for c in self.chars]] = np.arange(len(self.chars))
        return table

    @property
    def size(self) -> int:
        return len(self.chars)

    def encode(self, text: str) -> np.ndarray:
        """(n,) int64 ids of the n characters; UnknownCharacter for one that is not in `chars`."""
        points = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
        table = self._ids_by_code_point
        ids = table[np.minimum(points, len(table) - 1)]
        missing = (ids < 0) | (points >= len(table))
        if missing.any():
            raise UnknownCharacter(chr(points[missing.argmax()]))
        return ids

    def decode(self, ids) -> str:
        return "".join(self.chars[i] for i in ids)

    def unknown(self, text: str) -> str:
        """The characters of `text` this tokenizer has no id for, sorted."""
        return "".join(sorted(set(text) - set(self.chars)))

    def token_bytes(self) -> np.ndarray:
        """(size,) UTF-8 bytes of each id's text: bits per byte count text bytes, not tokens."""
        return np.array([len(c.encode()) for c in self.chars], dtype=np.int64)

    def describe(self) -> str:
        return f"char ({self.size:,} characters)"

    def to_dict(self) -> dict:
        return {"kind": self.kind, "chars": list(self.chars)}


@dataclass(frozen=True)
class ByteTokenizer:
    """The 256 byte values of UTF-8 text: any text, no training."""

    kind = "byte"
    size = 256

    def encode(self, text: str) -> np.ndarray:
        """Bytes of text read with surrogateescape (enwik8) encode back to the bytes of the file."""
        return np.frombuffer(text.encode("utf-8", "surrogateescape"), dtype=np.uint8).astype(np.int64)

    def decode(self, ids) -> str:
        return bytes(ids).decode(errors="replace")

    def unknown(self, text: str) -> str:
        return ""

    def token_bytes(self) -> np.ndarray:
        return np.ones(256, dtype=np.int64)

    def describe(self) -> str:
        return "byte (256 ids)"

    def to_dict(self) -> dict:
        return {"kind": self.kind}


@dataclass(frozen=True)
class HuggingFaceTokenizer:
    """A Hugging Face `tokenizers` tokenizer, kept as its tokenizer.json text (trained bpe or pretrained)."""

    definition: str  # the tokenizer.json text
    kind: str = "bpe"  # bpe (trained on the corpus) or pretrained (a file)

    @functools.cached_property
    def _tokenizer(self):
        from tokenizers import Tokenizer

        return Tokenizer.from_str(self.definition)

    @property
    def size(self) -> int:
        return self._tokenizer.get_vocab_size(with_added_tokens=True)

    def encode(self, text: str) -> np.ndarray:
        return np.array(self._tokenizer.encode(text, add_special_tokens=False).ids, dtype=np.int64)

    def encode_many(self, texts: list[str]) -> list[np.ndarray]:
        """Several texts at once: each cut into parts of about SUB_TEXT characters where the cut
        cannot change the tokens (`safe_cut`), which the library encodes on several threads."""
        parts = [split_safely(text, SUB_TEXT) for text in texts]
        encodings = self._tokenizer.encode_batch([p for text in parts for p in text], add_special_tokens=False)
        ids, start = [], 0
        for text in parts:
            chunk = encodings[start : start + len(text)]
            ids.append(
                np.concatenate([np.array(e.ids, dtype=np.int64) for e in chunk]) if chunk else np.zeros(0, np.int64)
            )
            start += len(text)
        return ids

    def decode(self, ids) -> str:
        return self._tokenizer.decode(list(ids), skip_special_tokens=False)

    def unknown(self, text: str) -> str:
        return "" if self.decode(self.encode(text)) == text else text

    def token_bytes(self) -> np.ndarray:
        """Byte-level tokens spell their bytes one character each; any other kind is measured by
        decoding each id alone (exact for byte-level tokenizers, an estimate otherwise)."""
        vocab = self._tokenizer.get_vocab(with_added_tokens=True)
        lengths = np.zeros(self.size, dtype=np.int64)
        byte_level = "ByteLevel" in self.definition
        for token, index in vocab.items():
            lengths[index] = len(token) if byte_level else len(self.decode([index]).encode())
        return lengths

    def describe(self) -> str:
        return f"{self.kind} ({self.size:,} ids, sha256 {hashlib.sha256(self.definition.encode()).hexdigest()[:12]})"

    def to_dict(self) -> dict:
        return {"kind": self.kind, "tokenizer.json": self.definition}


@dataclass(frozen=True)
class TiktokenTokenizer:
    """A tiktoken encoding by name (gpt2, cl100k_base, ...), read from tiktoken's local cache."""

    encoding: str
    kind = "tiktoken"

    @functools.cached_property
    def _encoding(self):
        return load_tiktoken(self.encoding)

    @property
    def size(self) -> int:
        return self._encoding.n_vocab

    def encode(self, text: str) -> np.ndarray:
        return np.array(self._encoding.encode_ordinary(text), dtype=np.int64)

    def decode(self, ids) -> str:
        return self._encoding.decode(list(ids), errors="replace")

    def unknown(self, text: str) -> str:
        return ""

    def token_bytes(self) -> np.ndarray:
        return np.array([len(self._encoding.decode_single_token_bytes(i)) for i in range(self.size)], dtype=np.int64)

    def describe(self) -> str:
        return f"tiktoken {self.encoding} ({self.size:,} ids)"

    def to_dict(self) -> dict:
        return {"kind": self.kind, "encoding": self.encoding}


Tokenizer = CharTokenizer | ByteTokenizer | HuggingFaceTokenizer | TiktokenTokenizer


def tokenizer_from_dict(data: dict) -> Tokenizer:
    """The tokenizer `to_dict` described; a dict without `kind` is a char vocabulary of the first format."""
    kind = data.get("kind", "char")
    if kind == "char":
        return CharTokenizer(tuple(data["chars"]))
    if kind == "byte":
        return ByteTokenizer()
    if kind == "tiktoken":
        return TiktokenTokenizer(data["encoding"])
    return HuggingFaceTokenizer(data["tokenizer.json"], kind)


def load_tiktoken(name: str):
    """A tiktoken encoding, from its local cache only; TokenizerLoadError saying what is missing."""
    import tiktoken

    try:
        return tiktoken.get_encoding(name)
    except ValueError:
        raise TokenizerLoadError(
            f"{name!r} is not a tiktoken encoding", ", ".join(sorted(tiktoken.list_encoding_names()))
        ) from None
    except Exception as err:  # requests' ConnectionError and friends: the file is not cached
        raise TokenizerLoadError(
            f"the tiktoken encoding {name!r} is not in tiktoken's local cache and cannot be downloaded "
            f"({err.__class__.__name__})",
            "run once where the network is reachable (the file lands in $TIKTOKEN_CACHE_DIR), "
            "or tokenizer.path=a tokenizer.json file",
        ) from None


def load_tokenizer_json(path: str) -> HuggingFaceTokenizer:
    """A tokenizer.json file that reproduces text exactly; TokenizerLoadError otherwise."""
    from tokenizers import Tokenizer

    allowed = "a Hugging Face tokenizer.json that reproduces text exactly (byte-level BPE such as GPT-2's)"
    try:
        definition = open(path, encoding="utf-8").read()
        Tokenizer.from_str(definition)
    except FileNotFoundError:
        raise TokenizerLoadError(f"{path} does not exist", allowed) from None
    except (OSError, UnicodeDecodeError) as err:
        raise TokenizerLoadError(f"cannot read {path} ({err.__class__.__name__})", allowed) from None
    except Exception as err:  # the library raises a bare Exception for a corrupt or foreign file
        first = str(err).splitlines()[0][:120] if str(err) else err.__class__.__name__
        raise TokenizerLoadError(f"{path} is not a tokenizer.json ({first})", allowed) from None
    tokenizer = HuggingFaceTokenizer(definition, "pretrained")
    probe = "Hello, World!\n  tabs\tand 123 numbers; ünïcode ✓\n"
    if tokenizer.decode(tokenizer.encode(probe)) != probe:
        raise TokenizerLoadError(f"{path} does not reproduce text exactly (it normalises or drops characters)", allowed)
    return tokenizer


def encode_texts(tokenizer: Tokenizer, texts: list[str]) -> list[np.ndarray]:
    """Each text's ids (a preparation worker's task)."""
    if isinstance(tokenizer, HuggingFaceTokenizer):
        return tokenizer.encode_many(texts)
    return [tokenizer.encode(text) for text in texts]


SUB_TEXT = 1 << 16  # characters per part of a text the Hugging Face library encodes or trains on


def split_safely(text: str, size: int) -> list[str]:
    """`text` in parts of about `size` characters, cut only where `safe_cut` allows."""
    parts = []
    while len(text) > size:
        cut = safe_cut(text, size)
        parts.append(text[:cut])
        text = text[cut:]
    return [*parts, text] if text or not parts else parts


def safe_cut(text: str, target: int) -> int:
    """A place near `target` to cut `text` without changing how it tokenizes: before a space that
    follows a non-space. No piece of the GPT-2 or cl100k pre-tokenizer patterns holds a non-space
    followed by a space, so the pieces, hence the tokens, on both sides stay the same. Falls back to
    `target` in text without such a place."""
    index = text.rfind(" ", 1, target)
    while index > 0 and text[index - 1].isspace():
        index = text.rfind(" ", 1, index - 1)
    return index if index > 0 else target
