"""Checkpoint files: atomic writes, keep-last rotation plus `best.pt`, safe loading.

A checkpoint holds only plain data (tensors, numbers, strings, lists, dicts), so it loads with
`torch.load(weights_only=True)` and never needs a pickled class of this package.
"""

import json
import os
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import torch
from annotated_types import Ge

from models import GPT, GPTConfig
from trainer.compatibility import check_vocabulary
from trainer.ema import averaged_state_dict
from trainer.errors import CheckpointError
from trainer.vocab import Vocabulary

_STEP_FILE = re.compile(r"^ckpt_(\d+)\.pt$")
BEST = "best.pt"
LINEAGE = "lineage.json"


@dataclass
class CheckpointConfig:
    keep_last: Annotated[int, Ge(1)] = 2  # step checkpoints kept besides best.pt

    def build(self, run_dir: Path) -> "CheckpointDirectory":
        return CheckpointDirectory(run_dir / "checkpoints", self.keep_last)


class CheckpointDirectory:
    """The checkpoints of one run folder and its line of training.

    `lineage.json` lists the steps of the current line, oldest first (written atomically). Resuming
    an earlier checkpoint starts a new line from it: later steps of the abandoned line are no longer
    in it, so rotation, `resume=auto` and rollbacks never reach them. A folder without the file (an
    older run) is read as one line of all its step files.
    """

    def __init__(self, directory: Path, keep_last: int):
        self.directory, self.keep_last = Path(directory), keep_last
        self.lineage_file = self.directory / LINEAGE

    def save(self, payload: dict, step: int, is_best: bool) -> Path:
        """Write the checkpoint of `step`, make it the newest of the line, rotate, link `best.pt`.

        The order keeps every kill harmless: the file is complete before the line names it, the
        line names it before older files go, and a kill before `best.pt` is linked is repaired by
        `check_best` when the run is resumed.
        """
        self.directory.mkdir(parents=True, exist_ok=True)
        path = self.path_of(step)
        _atomic_save(payload, path)
        line = ([s for s in self.lineage() if s < step] + [step])[-self.keep_last :]
        self._write_lineage(line)
        for old in self.step_files():
            if _step_number(old) < line[0]:  # rotated out, or of an abandoned line this one has passed
                old.unlink(missing_ok=True)
        if is_best:
            self._link_best(path)
        return path

    def branch_from(self, step: int) -> None:
        """A resume from the checkpoint of `step`: the line continues from there. Temporary files
        of writes a kill interrupted are removed."""
        for staging in self.directory.glob(".*.tmp"):
            staging.unlink(missing_ok=True)
        if self.lineage_file.exists() or self.step_files():
            self._write_lineage([s for s in self.lineage() if s <= step])

    def check_best(self, best_step: int | None) -> str | None:
        """Make `best.pt` hold the state of `best_step`, the best of the line being resumed.

        A kill between writing a checkpoint and linking it, or a resume that abandons a later line,
        leaves `best.pt` holding another state. Returns a line saying what was repaired, or None.
        """
        best = self.directory / BEST
        source = self.path_of(best_step) if best_step is not None else None
        if source is not None and source.is_file():
            if best.is_file() and os.path.samefile(best, source):
                return None
            self._link_best(source)
            return f"checkpoints: best.pt now holds step {best_step}, the best of the line resumed"
        if not best.is_file():
            return None
        held = _step_of(best)
        if held is not None and held == best_step:
            return None
        best.unlink()
        _fsync_folder(self.directory)
        return f"checkpoints: removed best.pt (step {held}): it is not the best state of the line resumed"

    def lineage(self) -> list[int]:
        if self.lineage_file.exists():
            return json.loads(self.lineage_file.read_text())["steps"]
        return [_step_number(p) for p in self.step_files()]

    def step_files(self) -> list[Path]:
        """Every step checkpoint in the folder, oldest first (whatever line it belongs to)."""
        if not self.directory.is_dir():
            return []
        return sorted((p for p in self.directory.iterdir() if _STEP_FILE.match(p.name)), key=_step_number)

    def latest(self) -> Path | None:
        """The newest checkpoint of the current line."""
        existing = [self.path_of(s) for s in self.lineage() if self.path_of(s).is_file()]
        return existing[-1] if existing else None

    def path_of(self, step: int) -> Path:
        """The file of the checkpoint of `step` (whether or not it exists)."""
        return self.directory / f"ckpt_{step:07d}.pt"

    def keep_as_best(self, payload: dict) -> None:
        """`best.pt` holds a state that has no checkpoint of its own (step 0's, kept in memory)."""
        self.directory.mkdir(parents=True, exist_ok=True)
        _atomic_save(payload, self.directory / BEST)

    def _link_best(self, path: Path) -> None:
        # A hard link costs no second write; the rename keeps `best.pt` always complete.
        staging = self.directory / f".{BEST}.tmp"
        staging.unlink(missing_ok=True)
        os.link(path, staging)
        os.replace(staging, self.directory / BEST)
        _fsync_folder(self.directory)

    def _write_lineage(self, steps: list[int]) -> None:
        staging = self.directory / f".{LINEAGE}.tmp"
        try:
            with open(staging, "w") as file:
                json.dump({"steps": steps}, file)
                file.flush()
                os.fsync(file.fileno())
            os.replace(staging, self.lineage_file)
            _fsync_folder(self.directory)
        except OSError as err:  # a full disk: the line stays as it was (a new file it misses is rotated later)
            staging.unlink(missing_ok=True)
            raise CheckpointWriteError(self.lineage_file, err) from None


def _atomic_save(payload: dict, path: Path) -> None:
    """Write to a temporary file, flush it to disk, rename it, and flush the folder: a crash or a
    power cut never leaves a torn checkpoint. A failed write (disk full, permission) removes the
    temporary file, leaves every earlier checkpoint as it was, and raises CheckpointWriteError."""
    staging = path.with_name(f".{path.name}.tmp")
    try:
        with open(staging, "wb") as file:
            torch.save(payload, file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(staging, path)
        _fsync_folder(path.parent)
    except BaseException as err:
        staging.unlink(missing_ok=True)  # whatever went wrong, no torn file stays behind
        cause = _os_error_in(err)
        if cause is None:
            raise  # not a failed write: a bug or an interrupt, with its traceback
        raise CheckpointWriteError(path, cause) from None


def _os_error_in(err: BaseException) -> OSError | None:
    """The OSError behind a failed write. torch's zip writer turns the one a full disk raises in
    `file.write` into a RuntimeError ("unexpected pos ...") whose context is that OSError."""
    seen = set()
    while err is not None and id(err) not in seen:
        if isinstance(err, OSError):
            return err
        seen.add(id(err))
        err = err.__cause__ or err.__context__
    return None


def _step_number(path: Path) -> int:
    """The step in a step checkpoint's file name."""
    return int(_STEP_FILE.match(path.name).group(1))


def step_in_name(path: Path) -> int | None:
    """The step of a `ckpt_<step>.pt` file, None for any other name (best.pt, a copied file)."""
    return _step_number(path) if _STEP_FILE.match(path.name) else None


def _step_of(path: Path) -> int | None:
    """The step a checkpoint file holds (read lazily: the tensors stay on disk), None if unreadable."""
    try:
        return _quiet_load(path, mmap=True)["state"]["step"]
    except Exception:  # a foreign or damaged file holds no step of this run
        return None


def _quiet_load(path: Path, mmap: bool):
    """`torch.load` on the CPU, weights only, without its warnings: a foreign pickle makes torch warn
    about its protocol before it fails, and the caller's one-line error already says what is wrong."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)


def _fsync_folder(folder: Path) -> None:
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


class CheckpointWriteError(RuntimeError):
    """Writing a checkpoint failed; the message names the file and the OS error in one line."""

    def __init__(self, path: Path, err: OSError):
        self.path = path
        super().__init__(f"cannot write checkpoint {path}: {err.strerror or err}")


CHECKPOINT_PATH = "the path of a checkpoint file, of a folder with ckpt_*.pt, or of a run folder"


def find_checkpoint(path: str | Path, key: str) -> Path:
    """The checkpoint file `path` names (a folder: its latest ckpt_*.pt); CheckpointError if there is none.

    Cheap (no file is read), so the config contract can call it before anything runs.
    """
    path = Path(path).expanduser()
    if path.is_dir() and (path / "checkpoints").is_dir():  # a run folder: its checkpoints
        path = path / "checkpoints"
    if path.is_dir():
        latest = CheckpointDirectory(path, keep_last=1).latest()
        if latest is None:
            raise CheckpointError(key, f"{path} holds no checkpoint", CHECKPOINT_PATH)
        return latest
    if not path.is_file():
        raise CheckpointError(key, f"{path} does not exist", CHECKPOINT_PATH)
    return path


def best_or_latest(path: str, key: str) -> Path:
    """A run folder stands for its best.pt (its latest checkpoint when it has none)."""
    best = Path(path).expanduser() / "checkpoints" / "best.pt"
    return best if best.is_file() else find_checkpoint(path, key)


def load_checkpoint(path: str | Path, key: str = "resume", lazy: bool = False) -> dict:
    """Load a checkpoint on the CPU with `weights_only=True`; CheckpointError for a bad file.

    `lazy` maps the file instead of reading it: cheap when only the config or state is needed.
    """
    path = find_checkpoint(path, key)
    try:
        payload = _quiet_load(path, mmap=lazy)
    except Exception as err:  # a truncated or foreign file fails in many ways; all mean "corrupt"
        raise CheckpointError(
            key,
            f"{path} is not a readable checkpoint ({err.__class__.__name__})",
            "a checkpoint written by this trainer",
        ) from None
    if not isinstance(payload, dict) or "model" not in payload or "architecture" not in payload:
        raise CheckpointError(
            key, f"{path} is not a checkpoint of this trainer", "a checkpoint written by this trainer"
        )
    return payload


def load_model(path: str | Path, key: str, modes: tuple[str, ...], allowed: str, device="cpu", averaged=False):
    """The model of the checkpoint at `path` in eval mode (`averaged`: its weight average where it has
    one), with its payload; CheckpointError when it is not of one of `modes` (a scorer for a generator)."""
    payload = load_checkpoint(path, key=key)
    file = find_checkpoint(path, key)
    try:
        mode = payload["config"]["mode"]["name"]
        Vocabulary.from_dict(payload["vocab"]), payload["state"]["step"]  # what the callers read
    except (KeyError, TypeError):
        raise CheckpointError(key, f"{file} lacks a run's config, vocabulary or state", allowed) from None
    if mode not in modes:
        raise CheckpointError(key, f"{file} is a checkpoint of {mode} training", allowed)
    try:
        model = GPT(GPTConfig(**payload["architecture"]))
        model.load_state_dict(averaged_state_dict(payload) if averaged else payload["model"])
    except (TypeError, ValueError, RuntimeError) as err:
        problem = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CheckpointError(key, f"{file}: its model cannot be built ({problem})", allowed) from None
    return model.to(device).eval().requires_grad_(False), payload


def load_reference(path: str | None, vocab: Vocabulary, device, key: str = "reference") -> torch.nn.Module | None:
    """A language model of the same vocabulary, to score the samples' generative perplexity; samples
    longer than its block are read in windows (trainer.sampling.quality.next_token_nll)."""
    if path is None:
        return None
    path = best_or_latest(path, key)
    model, payload = load_model(path, key, ("language_model",), "a language_model checkpoint", device)
    check_vocabulary(payload, vocab, key, "a language model trained on the generator's text", "the generator")
    return model
