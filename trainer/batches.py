"""Window sampling and the background batch stream.

Every batch is a pure function of (seed, stream, step, micro-step): its generator is derived from
those numbers, never from a shared global RNG. Prefetching therefore cannot change what the loop
sees, and a resumed run draws exactly the batches the uninterrupted run would have drawn. Under
several processes the micro-step index is global: rank r of W draws micro-steps r*A/W ... (r+1)*A/W - 1
of the step's A, so the ranks together draw the batches one process would draw alone.
"""

import queue
import threading
from enum import IntEnum
from typing import Callable

import numpy as np
import torch


class Stream(IntEnum):
    """Independent random streams, so evaluation never disturbs the training batches."""

    TRAIN = 0
    EVAL_TRAIN = 1
    VALIDATION = 2


def generator_for(seed: int, stream: Stream, step: int, micro_step: int = 0, epoch: int = 0) -> torch.Generator:
    """A fresh generator for one batch. `epoch` counts rollbacks, so re-run steps draw new batches.
    `micro_step` is global (it already tells the ranks apart); the 0 in the key, once a rank, keeps
    the batches of runs that began before."""
    words = np.random.SeedSequence([seed, int(stream), 0, step, micro_step, epoch]).generate_state(2)
    generator = torch.Generator()
    generator.manual_seed(int(words[0]) << 32 | int(words[1]))
    return generator


class TokenWindows:
    """Uniformly sampled windows of `length` tokens from one split (a memmap; never loaded whole),
    starting anywhere, or only where `starts` allows (after a blank line, inside one document)."""

    def __init__(self, tokens, length: int, starts: "WindowStarts | None" = None):
        if len(tokens) <= length:
            raise ValueError(f"split of {len(tokens)} tokens is too short for windows of {length}")
        self.tokens, self.length = tokens, length
        self.starts = starts or WindowStarts.anywhere(len(tokens), length)

    def sample(self, n: int, generator: torch.Generator) -> torch.Tensor:
        """(n, length) int64 windows."""
        starts = self.starts.draw(n, generator)
        windows = self.tokens[starts[:, None] + np.arange(self.length)]
        return torch.from_numpy(windows.astype(np.int64))


class WindowStarts:
    """Where windows may start: runs of consecutive positions (`firsts[i]`, `counts[i]` of them),
    drawn uniformly over all of them. Memory grows with the runs (one per document at most), not the
    tokens."""

    def __init__(self, firsts: np.ndarray, counts: np.ndarray):
        self.firsts, self.counts = np.asarray(firsts, dtype=np.int64), np.asarray(counts, dtype=np.int64)
        self.ends = np.cumsum(self.counts)  # the draws below each run's end belong to it

    @classmethod
    def anywhere(cls, tokens: int, length: int) -> "WindowStarts":
        return cls([0], [tokens - length])

    @classmethod
    def after_blank_lines(cls, tokens, length: int, newline_id: int) -> "WindowStarts | None":
        """At double newlines (vectorised); None when the text has none early enough."""
        data = np.asarray(tokens)
        double = np.flatnonzero((data[:-1] == newline_id) & (data[1:] == newline_id))
        double = double[double < len(data) - length]
        return cls(double, np.ones_like(double)) if len(double) else None

    @classmethod
    def within_documents(cls, tokens: int, ends: np.ndarray, length: int) -> "WindowStarts | None":
        """Windows that end at or before their document's end-of-document id (`ends`: their positions;
        text after the last one is a document too). None when no document holds a window."""
        lasts = ends if len(ends) and ends[-1] == tokens - 1 else np.append(ends, tokens - 1)
        firsts = np.concatenate([[0], lasts[:-1] + 1])
        counts = lasts - firsts - length + 2
        fits = counts > 0
        return cls(firsts[fits], counts[fits]) if fits.any() else None

    def draw(self, n: int, generator: torch.Generator) -> np.ndarray:
        """(n,) start positions."""
        draws = torch.randint(int(self.ends[-1]), (n,), generator=generator).numpy()
        if len(self.firsts) == 1:
            return self.firsts[0] + draws
        run = np.searchsorted(self.ends, draws, side="right")
        return self.firsts[run] + draws - (self.ends[run] - self.counts[run])


class BatchStream:
    """Produces the training batches of steps start, start+1, ... in a background thread.

    `make_batch(generator, stage, step)` builds one CPU batch for a curriculum stage and step; the thread runs
    ahead by `depth` batches so data preparation (window gathering, masking) overlaps the model's
    forward and backward passes. A stage change or a rollback (a new epoch) restarts it, like a
    jump in steps does. This process draws the `micro_steps` micro-steps from `first_micro_step` on
    (global indices: a rank's share of each step).
    """

    def __init__(self, make_batch: Callable, seed: int, micro_steps: int, depth: int = 4, first_micro_step: int = 0):
        self.make_batch, self.seed, self.depth = make_batch, seed, depth
        self.micro_steps = range(first_micro_step, first_micro_step + micro_steps)
        self._thread: threading.Thread | None = None
        self._expected: tuple[int, int, int, int] | None = None

    def get(self, step: int, micro_step: int, stage: int = 0, epoch: int = 0):
        """The batch of (step, micro_step) at `stage` and `epoch`; restarts the producer if the loop jumped."""
        key = (step, micro_step, stage, epoch)
        if self.depth == 0:
            return self._build(*key)
        if self._expected != key:
            self._start(key)
        produced, batch = self._queue.get()
        if isinstance(batch, BaseException):
            raise batch
        assert produced == key
        self._expected = self._next_key(*key)
        return batch

    def close(self) -> None:
        if self._thread is not None:
            self._stop.set()
            while self._thread.is_alive():
                try:
                    self._queue.get_nowait()  # unblock a producer waiting on a full queue
                except queue.Empty:
                    self._thread.join(timeout=0.05)
            self._thread = None
        self._expected = None

    def _build(self, step: int, micro_step: int, stage: int, epoch: int):
        generator = generator_for(self.seed, Stream.TRAIN, step, micro_step, epoch=epoch)
        return self.make_batch(generator, stage, step)

    def _next_key(self, step: int, micro_step: int, stage: int, epoch: int) -> tuple[int, int, int, int]:
        if micro_step + 1 < self.micro_steps.stop:
            return step, micro_step + 1, stage, epoch
        return step + 1, self.micro_steps.start, stage, epoch

    def _start(self, key: tuple[int, int, int, int]) -> None:
        self.close()
        self._queue: queue.Queue = queue.Queue(maxsize=self.depth)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._produce, args=(key,), daemon=True)
        self._thread.start()

    def _produce(self, key: tuple[int, int, int, int]) -> None:
        try:
            while not self._stop.is_set():
                self._queue.put((key, self._build(*key)))
                key = self._next_key(*key)
        except BaseException as err:  # hand the failure to the loop instead of dying silently
            self._queue.put((key, err))
