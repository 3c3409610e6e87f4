"""Token files: a prepared corpus's ids in shards of at most SHARD_TOKENS ids (tokens-00000.bin, ...),
written in order and read back as one sequence of memmaps, never loaded whole."""

from pathlib import Path

import numpy as np

SHARD_TOKENS = 1 << 28  # ids per token file (512 MB of uint16)


class ShardWriter:
    """Appends ids to token files of at most SHARD_TOKENS ids each: tokens-00000.bin, ..."""

    def __init__(self, folder: Path, dtype):
        self.folder, self.dtype, self.shard_tokens = folder, dtype, SHARD_TOKENS
        self.shards: list[dict] = []
        self.tokens = 0
        self._file = None

    def write(self, ids: np.ndarray) -> None:
        ids = np.asarray(ids).astype(self.dtype, copy=False)
        while len(ids):
            if self._file is None or self.shards[-1]["tokens"] == self.shard_tokens:
                self._next_shard()
            room = self.shard_tokens - self.shards[-1]["tokens"]
            ids[:room].tofile(self._file)
            self.shards[-1]["tokens"] += len(ids[:room])
            self.tokens += len(ids[:room])
            ids = ids[room:]

    def _next_shard(self) -> None:
        if self._file is not None:
            self._file.close()
        name = f"tokens-{len(self.shards):05d}.bin"
        self._file = open(self.folder / name, "wb")
        self.shards.append({"file": name, "tokens": 0})

    def close(self) -> list[dict]:
        if self._file is not None:
            self._file.close()
        return self.shards


class TokenStream:
    """The token files of a prepared corpus as one read-only sequence of ids (memmaps, never loaded
    whole). `view(start, stop)` is a split: a memmap slice when it lies in one file."""

    def __init__(self, folder: Path, manifest: dict):
        self.dtype = dtype = np.dtype(manifest["dtype"])
        self.files = [np.memmap(folder / s["file"], dtype=dtype, mode="r") for s in manifest["shards"] if s["tokens"]]
        self.offsets = np.cumsum([0] + [len(f) for f in self.files])

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def read(self, start: int, stop: int) -> np.ndarray:
        """Ids start..stop-1 as an array (copies from each file they lie in)."""
        first = int(np.searchsorted(self.offsets, start, side="right")) - 1
        parts = []
        while start < stop:
            begin = start - int(self.offsets[first])
            end = min(stop - int(self.offsets[first]), len(self.files[first]))
            parts.append(np.asarray(self.files[first][begin:end]))
            start += end - begin
            first += 1
        return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)

    def view(self, start: int, stop: int):
        if start >= stop:
            return np.zeros(0, dtype=self.dtype)
        first = int(np.searchsorted(self.offsets, start, side="right")) - 1
        if first < len(self.files) and stop <= self.offsets[first + 1]:
            return self.files[first][start - int(self.offsets[first]) : stop - int(self.offsets[first])]
        return TokenSpan(self, start, stop)


class TokenSpan:
    """Ids start..stop-1 of a token stream that spans files: indexed like an array."""

    def __init__(self, stream: TokenStream, start: int, stop: int):
        self.stream, self.start, self.stop = stream, start, stop
        self.dtype = stream.dtype

    def __len__(self) -> int:
        return self.stop - self.start

    def __getitem__(self, index):
        if isinstance(index, slice):
            start, stop, _ = index.indices(len(self))
            return self.stream.read(self.start + start, self.start + stop)
        index = np.asarray(index) + self.start
        out = np.empty(index.shape, dtype=self.dtype)
        which = np.searchsorted(self.stream.offsets, index, side="right") - 1
        for file in np.unique(which):
            chosen = which == file
            out[chosen] = self.stream.files[file][index[chosen] - self.stream.offsets[file]]
        return out

    def __array__(self, dtype=None, copy=None):
        return self[:].astype(dtype) if dtype is not None else self[:]
