"""Preparing a corpus in bounded memory: documents streamed in pieces, tokenized by worker processes,
written to sharded token files with a manifest.

The passes over the source: (char) collect the alphabet, or (bpe) train the tokenizer on the
training documents; then encode. Nothing holds more than a few pieces of text and their ids at a
time, so peak memory does not grow with the corpus. The validation split is the last
`val_fraction` of the documents (of the tokens, for a corpus of one document): the manifest records
where it starts in the one token stream the shards hold, so nothing is copied to split it.
"""

import bisect
import hashlib
import json
import multiprocessing
import sys
import time
from collections import deque
from collections.abc import Iterator
from itertools import takewhile
from pathlib import Path

import numpy as np

from trainer.errors import DataError
from trainer.reporting import strict_json
from trainer.shards import ShardWriter, TokenStream
from trainer.tokenization import (
    SUB_TEXT,
    ByteTokenizer,
    CharTokenizer,
    HuggingFaceTokenizer,
    Tokenizer,
    encode_texts,
    split_safely,
    tokenizer_from_dict,
)
from trainer.vocab import TokenizerConfig, Vocabulary

FORMAT_VERSION = 2
MANIFEST = "manifest.json"
TASK_BYTES = 1 << 20  # text per encoding task
SMALL_CORPUS = 64 << 20  # below this, workers cost more to start than they save


def split_documents(documents: int, val_fraction: float, test_fraction: float) -> tuple[int, int]:
    """(validation, test) documents: the last fractions (at least one each where asked, test last),
    or (0, 0) for a corpus of one document, which is split by tokens. DataError when no training
    document would be left."""
    if documents == 1:
        return 0, 0
    n_test = max(1, int(documents * test_fraction)) if test_fraction else 0
    n_val = max(1, int(documents * val_fraction))
    if documents - n_val - n_test < 1:
        raise DataError(
            "data.val_fraction",
            f"{documents} documents leave none for training after {n_val} validation and {n_test} test ones",
            "a corpus of more documents, or smaller data.val_fraction and data.test_fraction",
        )
    return n_val, n_test


def token_splits(tokens: int, val_fraction: float, test_fraction: float) -> tuple[int, int]:
    """(val_start, test_start) of a corpus of one document: the last fractions of its tokens (the
    validation split of the first format, int(n * (1 - val_fraction)), where there is no test split)."""
    if not test_fraction:
        return int(tokens * (1 - val_fraction)), tokens
    test_start = tokens - int(tokens * test_fraction)
    return test_start - int(tokens * val_fraction), test_start


def write_corpus(
    source, tokenizer_config: TokenizerConfig, fractions: tuple[float, float], workers: int, folder: Path
) -> dict:
    """Prepare `source` into `folder` (token shards and the manifest); returns the manifest.
    `fractions`: (validation, test). Raises DataError from the source (a bad file or row), never
    leaving a manifest behind."""
    documents = source.count()
    if not documents:
        raise DataError("data", "the corpus holds no documents", "a corpus with text")
    n_val, n_test = split_documents(documents, *fractions)
    n_train = documents - n_val - n_test
    tokenizer = _tokenizer(source, tokenizer_config, n_train if n_val else None)
    vocab = Vocabulary(tokenizer, documents=documents > 1 or not isinstance(tokenizer, CharTokenizer))
    writer, lengths = ShardWriter(folder, vocab.token_dtype), vocab.token_bytes()
    content = hashlib.sha256()
    progress = Progress(source.size_bytes(), "tokenizing")
    marks = [(0, 0)]  # (tokens, text bytes) written so far, after each piece: the bytes of each split
    firsts = {}  # the first token of the validation and test documents
    for index, ids, ends_document in _encoded(_pieces(source, content, progress), tokenizer, workers, source):
        if ends_document and vocab.documents:
            ids = np.append(ids, vocab.eod_id)
        writer.write(ids)
        marks.append((writer.tokens, marks[-1][1] + int(lengths[ids].sum())))
        if ends_document and index + 1 in (n_train, n_train + n_val):
            firsts[index + 1] = writer.tokens
        progress.tokens = writer.tokens
    progress.close()
    shards = writer.close()
    if not writer.tokens:
        raise DataError("data", "the corpus holds no text (its files or rows are empty)", "a corpus with text")
    if n_val:  # the splits start where documents start
        val_start, test_start = firsts[n_train], firsts[n_train + n_val]
    else:
        val_start, test_start = token_splits(writer.tokens, *fractions)
    manifest = {
        "format": FORMAT_VERSION,
        "vocab": vocab.to_dict(),
        "dtype": np.dtype(vocab.token_dtype).name,
        "shards": shards,
        "tokens": writer.tokens,
        "val_start": val_start,
        "test_start": test_start,
        "documents": {"train": n_train, "val": n_val, "test": n_test} if n_val else None,
        "content_sha256": content.hexdigest(),
    }
    manifest["bytes"] = split_bytes(TokenStream(folder, manifest), marks, val_start, test_start, lengths)
    (folder / MANIFEST).write_text(strict_json.dumps(manifest))
    return manifest


def split_ranges(manifest: dict) -> dict[str, tuple[int, int]]:
    """Each split's [start, stop) in the token stream: train, then validation, then test."""
    val, total = manifest["val_start"], manifest["tokens"]
    test = manifest.get("test_start", total)  # (a manifest written before test splits: none)
    return {"train": (0, val), "val": (val, test), "test": (test, total)}


def train_bpe(texts, vocab_size: int, min_frequency: int) -> HuggingFaceTokenizer:
    """A byte-level BPE (the 256 byte symbols plus merges, up to `vocab_size` ids) trained on the
    texts of an iterator: the library streams them, counting words, so memory grows with the
    distinct words, not the corpus. Deterministic for the same texts in the same order."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers  # (not in the workers)

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator((part for text in texts for part in split_safely(text, SUB_TEXT)), trainer)
    return HuggingFaceTokenizer(json.dumps(json.loads(tokenizer.to_str()), sort_keys=True), "bpe")


def content_hash(source) -> str:
    """The hash `write_corpus` records, read again (data.verify=true)."""
    content = hashlib.sha256()
    for _ in _pieces(source, content, Progress(source.size_bytes(), "verifying")):
        pass
    return content.hexdigest()


def _tokenizer(source, config: TokenizerConfig, train_documents: int | None) -> Tokenizer:
    """char: the alphabet of the whole corpus; bpe: trained on the training documents (on the whole
    text for a corpus of one document); byte and pretrained need no pass."""
    if not config.trained:
        return config.load()
    pieces = _pieces(source, None, Progress(source.size_bytes(), "reading"))
    if config.name.value == "char":
        seen = np.zeros(0x110000, dtype=bool)
        for _, text, _ in pieces:
            seen[np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)] = True
        return CharTokenizer(tuple(chr(c) for c in np.flatnonzero(seen)))
    if train_documents is not None:  # stop reading where the validation documents begin
        pieces = takewhile(lambda piece: piece[0] < train_documents, pieces)
    return train_bpe((text for _, text, _ in pieces), config.vocab_size, config.min_frequency)


def _pieces(source, content, progress) -> Iterator[tuple[int, str, bool]]:
    """(document index, text, whether it ends the document) for every piece of every document;
    feeds the content hash and the progress when given."""
    for index, document in enumerate(source.documents()):
        for text in document:
            if content is not None:
                content.update(text.encode())
            if progress is not None:
                progress.advance(len(text))
            yield index, text, False
        if content is not None:
            content.update(b"\x1e")  # a document boundary is part of the content
        yield index, "", True


def _encoded(pieces, tokenizer: Tokenizer, workers: int, source) -> Iterator[tuple[int, np.ndarray, bool]]:
    """(document index, ids, ends the document) in order; `workers` processes encode tasks of about
    TASK_BYTES of text, at most 2 per worker in flight (0 or a small corpus: this process)."""
    tasks = _tasks(pieces)
    in_process = isinstance(tokenizer, (CharTokenizer, ByteTokenizer))  # a table lookup: faster than a pipe
    if in_process or workers == 0 or (source.size_bytes() or SMALL_CORPUS) < SMALL_CORPUS:
        for task in tasks:
            yield from _zip(task, encode_texts(tokenizer, [text for _, text, _ in task]))
        return
    spawn = multiprocessing.get_context("spawn")
    dtype = np.dtype(Vocabulary(tokenizer).token_dtype).name  # ids travel back in the token files' type
    with spawn.Pool(workers, initializer=_start_worker, initargs=(tokenizer.to_dict(), dtype)) as pool:
        pending: deque = deque()
        for task in tasks:
            pending.append((task, pool.apply_async(_encode_task, ([text for _, text, _ in task],))))
            if len(pending) >= 2 * workers:
                done, result = pending.popleft()
                yield from _zip(done, result.get())
        while pending:
            done, result = pending.popleft()
            yield from _zip(done, result.get())


def _tasks(pieces) -> Iterator[list[tuple[int, str, bool]]]:
    task, size = [], 0
    for piece in pieces:
        task.append(piece)
        size += len(piece[1])
        if size >= TASK_BYTES:
            yield task
            task, size = [], 0
    if task:
        yield task


def _zip(task, ids):
    for (index, _, ends), piece_ids in zip(task, ids):
        yield index, piece_ids, ends


_worker: dict = {}  # a worker process's tokenizer and id type


def _start_worker(tokenizer: dict, dtype: str) -> None:
    _worker.update(tokenizer=tokenizer_from_dict(tokenizer), dtype=dtype)


def _encode_task(texts: list[str]) -> list[np.ndarray]:
    return [ids.astype(_worker["dtype"]) for ids in encode_texts(_worker["tokenizer"], texts)]


def split_bytes(stream: TokenStream, marks: list[tuple[int, int]], val_start: int, test_start: int, lengths) -> dict:
    """UTF-8 bytes of text in each split (for bits per byte), from the bytes counted as the pieces
    were written (`marks`: tokens and bytes so far, after each piece), reading back only the ids
    between a split's start and the piece it falls in."""

    def before(position: int) -> int:
        tokens, counted = marks[bisect.bisect_right([m[0] for m in marks], position) - 1]
        return counted + int(lengths[stream.read(tokens, position)].sum())

    val, test, total = before(val_start), before(test_start), marks[-1][1]
    return {"train": val, "val": test - val, "test": total - test}


class Progress:
    """Throughput and an ETA while a large corpus is read, on stderr: a live line on a terminal (after
    a second), a line every 10% in a log (once it has taken 30 s); nothing for corpora under 16 MB."""

    def __init__(self, total_bytes: int | None, verb: str):
        self.total, self.verb, self.done, self.tokens = total_bytes, verb, 0, 0
        self.terminal = sys.stderr.isatty()
        self.started = time.monotonic()
        self.next_report = 1.0 if self.terminal else 0.0  # seconds on a terminal, else a fraction
        self.on = bool(total_bytes) and total_bytes >= 16 << 20

    def advance(self, characters: int) -> None:
        self.done += characters
        if not self.on:
            return
        elapsed, fraction = time.monotonic() - self.started, min(self.done / self.total, 1.0)
        mark = elapsed if self.terminal else fraction
        if mark < self.next_report or (not self.terminal and elapsed < 30):
            return
        self.next_report = mark + (0.5 if self.terminal else 0.1)
        rate = f"{self.done / elapsed / 1e6:.1f} MB/s" + (
            f", {self.tokens / elapsed / 1e6:.2f} M tokens/s" if self.tokens else ""
        )
        eta = elapsed * (1 - fraction) / fraction if fraction else 0.0
        line = f"data: {self.verb} {fraction:6.1%} of {self.total / 1e6:,.0f} MB, {rate}, ETA {eta:4.0f} s"
        print("\r" + line if self.terminal else line, end="" if self.terminal else "\n", file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.on and self.terminal and time.monotonic() - self.started >= 1.0:
            print(file=sys.stderr)
