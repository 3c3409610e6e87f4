"""Where a corpus's documents come from, read as a stream: the built-in plays, text files, JSONL,
Parquet, or a Hugging Face dataset.

A source yields its documents one at a time, each as pieces of text of a few MB (a file larger than
memory is never read whole), cut where the cut cannot change the tokens (`safe_cut`). Its
`fingerprint` identifies the content cheaply (paths, sizes, modification times; the package or the
dataset) and keys the prepared corpus in the cache. Every problem is a DataError naming the key.
"""

import codecs
import importlib
import json
from collections.abc import Iterator
from pathlib import Path

from trainer.errors import DataError
from trainer.tokenization import safe_cut

PIECE_BYTES = 1 << 20  # text read per piece
TEXT_ALLOWED = "a UTF-8 text file or a folder of them"

Document = Iterator[str]  # the pieces of one document's text


class FileSource:
    """Documents of files: a file, or every file below a folder (sorted; hidden ones skipped)."""

    def __init__(self, path: str, key: str = "data.path", allowed: str = TEXT_ALLOWED, suffixes: tuple = ()):
        self.root, self.key, self.allowed = Path(path).expanduser(), key, allowed
        if self.root.is_file():
            self.files = [self.root]
        elif self.root.is_dir():
            below = (p for p in self.root.rglob("*") if p.is_file() and not _hidden(p.relative_to(self.root)))
            self.files = sorted(p for p in below if not suffixes or p.suffix in suffixes)
            if not self.files and suffixes:
                raise DataError(key, f"{self.root} holds no {' or '.join(suffixes)} files", allowed)
        else:
            raise DataError(key, f"{self.root} does not exist", allowed)
        if not self.files:
            raise DataError(key, f"{self.root} holds no files", allowed)

    def fingerprint(self) -> dict:
        stats = [(str(f.absolute()), f.stat().st_size, f.stat().st_mtime_ns) for f in self.files]
        return {"files": stats}

    def size_bytes(self) -> int:
        return sum(f.stat().st_size for f in self.files)


class TextSource(FileSource):
    """data=text: each file is one document."""

    def count(self) -> int:
        return len(self.files)

    def documents(self) -> Iterator[Document]:
        for file in self.files:
            yield read_pieces(file, self.key, self.allowed)


class JsonlSource(FileSource):
    """data=jsonl: each line of each .jsonl file is a JSON object; its `text_key` holds one document."""

    def __init__(self, path: str, text_key: str):
        super().__init__(
            path, allowed="a JSONL file (one JSON object per line) or a folder of .jsonl files", suffixes=(".jsonl",)
        )
        self.text_key = text_key

    def count(self) -> int:
        return sum(1 for file in self.files for line in open(file, "rb") if line.strip())

    def documents(self) -> Iterator[Document]:
        for file in self.files:
            with open(file, "rb") as lines:
                for number, line in enumerate(lines, 1):
                    if line.strip():
                        yield iter([self._text(line, file, number)])

    def _text(self, line: bytes, file: Path, number: int) -> str:
        try:
            row = json.loads(line)
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            problem = f"{file} line {number} is not JSON ({err.__class__.__name__})"
            raise DataError("data.path", problem, self.allowed) from None
        if not isinstance(row, dict) or not isinstance(row.get(self.text_key), str):
            texts = [repr(key) for key, value in row.items() if isinstance(value, str)] if isinstance(row, dict) else []
            raise DataError(
                "data.text_key",
                f"{file} line {number} has no text under {self.text_key!r}",
                "the key of each row's text: " + ", ".join(texts) if texts else "rows with a text field",
            )
        return row[self.text_key]


class ParquetSource(FileSource):
    """data=parquet: each row's `text_key` column of each .parquet file is one document."""

    def __init__(self, path: str, text_key: str):
        super().__init__(path, allowed="a Parquet file or a folder of .parquet files", suffixes=(".parquet",))
        self.text_key = text_key
        self.tables = [self._open(file) for file in self.files]

    def _open(self, file: Path):
        pq = optional("pyarrow.parquet", "data=parquet")

        try:
            table = pq.ParquetFile(file)
        except Exception as err:  # pyarrow's ArrowInvalid and friends
            problem = f"{file} is not a Parquet file ({err.__class__.__name__})"
            raise DataError("data.path", problem, self.allowed) from None
        columns = table.schema_arrow.names
        if self.text_key not in columns:
            raise DataError("data.text_key", f"{file} has no column {self.text_key!r}", ", ".join(columns))
        return table

    def count(self) -> int:
        return sum(table.metadata.num_rows for table in self.tables)

    def documents(self) -> Iterator[Document]:
        for table in self.tables:
            for batch in table.iter_batches(batch_size=1024, columns=[self.text_key]):
                for text in batch.column(0).to_pylist():
                    yield iter([text or ""])


class HuggingFaceSource:
    """data=hf: a Hugging Face `datasets` dataset by name (from the local cache, or the network where
    there is one) or by local path (a folder of data files, or one written by `save_to_disk`)."""

    def __init__(self, name: str, config: str | None, split: str, streaming: bool, text_key: str):
        self.name, self.config, self.split, self.streaming, self.text_key = name, config, split, streaming, text_key
        self.dataset = _load_dataset(name, config, split, streaming)
        columns = self.dataset.column_names or []
        if text_key not in columns:
            raise DataError("data.text_key", f"the dataset {name!r} has no column {text_key!r}", ", ".join(columns))

    def fingerprint(self) -> dict:
        content = None if self.streaming else self.dataset._fingerprint
        return {"dataset": self.name, "config": self.config, "split": self.split, "content": content}

    def size_bytes(self) -> int | None:
        return None if self.streaming else int(self.dataset.data.nbytes)

    def count(self) -> int:
        if not self.streaming:
            return len(self.dataset)
        return sum(1 for _ in self.dataset)

    def documents(self) -> Iterator[Document]:
        for row in self.dataset:
            yield iter([row[self.text_key] or ""])


def _load_dataset(name: str, config: str | None, split: str, streaming: bool):
    datasets = optional("datasets", "data=hf")
    import huggingface_hub

    allowed = "a dataset in the local Hugging Face cache, a local folder, or one reachable over the network"
    datasets.logging.set_verbosity_error()
    datasets.disable_progress_bars()
    huggingface_hub.utils.logging.set_verbosity_error()  # its retries would print lines of their own
    try:
        if (Path(name).expanduser() / "dataset_info.json").is_file():  # written by save_to_disk
            loaded = datasets.load_from_disk(str(Path(name).expanduser()))
            return loaded[split] if isinstance(loaded, datasets.DatasetDict) else loaded
        return datasets.load_dataset(name, config, split=split, streaming=streaming)
    except Exception as err:  # offline lookups, missing files, a bad split or config: all one line
        first = str(err).splitlines()[0][:160] if str(err) else err.__class__.__name__
        raise DataError("data.dataset", f"{name!r} does not load ({first})", allowed) from None


def read_pieces(file: Path, key: str, allowed: str, opened=None, errors: str = "strict") -> Document:
    """A UTF-8 file's text in pieces of about PIECE_BYTES, cut where tokens cannot straddle; a
    leading byte-order mark is not part of the text. `opened()` opens another binary stream for it (a
    zip member); errors="surrogateescape" keeps bytes that are not UTF-8 (they encode back exactly)."""
    decoder = codecs.getincrementaldecoder("utf-8-sig")(errors)
    carry = ""
    try:
        with opened() if opened else open(file, "rb") as stream:
            while block := stream.read(PIECE_BYTES):
                text = carry + decoder.decode(block)
                cut = safe_cut(text, len(text))
                carry = text[cut:]
                yield text[:cut]
            yield carry + decoder.decode(b"", final=True)
    except (UnicodeDecodeError, OSError) as err:
        raise DataError(key, f"cannot read {file} as UTF-8 text ({err.__class__.__name__})", allowed) from None


def optional(module: str, choice: str):
    """A library of the `corpora` extra; DataError saying how to install it when it is missing."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise DataError(
            "data", f"{choice} needs {module.split('.')[0]}", "pip install 'unmasking-lab[corpora]'"
        ) from None


def _hidden(relative: Path) -> bool:
    return any(part.startswith(".") for part in relative.parts)
