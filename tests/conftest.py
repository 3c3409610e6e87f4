"""Shared fixtures: a small generated corpus, a private data cache, and in-process training runs."""

import io
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from rich.console import Console

from trainer.build import build_trainer
from trainer.cli import main as cli
from trainer.cli.main import CONF_DIR
from trainer.config import register_schemas
from trainer.objectives import MODES
from trainer.plan import plan_job

WORDS = (
    "the king queen my lord good night come go speak love death time sword crown heart "
    "what shall will not and to of in is it thou thee thy art hath doth"
).split()


def generated_text(chars: int, seed: int = 0) -> str:
    """Sentence-like text with real structure (words, punctuation, paragraphs) to learn from."""
    rng = random.Random(seed)
    lines = []
    while sum(map(len, lines)) < chars:
        speaker = rng.choice(["KING", "QUEEN", "LORD"])
        verse = " ".join(rng.choice(WORDS) for _ in range(rng.randint(4, 9)))
        lines.append(f"{speaker}:\n{verse.capitalize()}{rng.choice('.,!?')}\n\n")
    return "".join(lines)[:chars]


@pytest.fixture(scope="session", autouse=True)
def data_cache(tmp_path_factory):
    """Keep prepared corpora of the tests away from the user's cache."""
    path = tmp_path_factory.mktemp("cache")
    mp = pytest.MonkeyPatch()
    mp.setenv("UNMASKING_LAB_CACHE", str(path))
    yield path
    mp.undo()


@pytest.fixture(scope="session", autouse=True)
def one_torch_thread():
    """One torch thread, here and in the `python -m trainer` processes the tests start: the models
    are tiny, and two threads per process only wait on each other (on a busy machine, for long)."""
    mp = pytest.MonkeyPatch()
    mp.setenv("OMP_NUM_THREADS", "1")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
    mp.undo()


@pytest.fixture(scope="session")
def corpus_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("corpus") / "corpus.txt"
    path.write_text(generated_text(60_000))
    return path


def compose_config(overrides: list[str]):
    register_schemas()
    with initialize_config_dir(version_base="1.3", config_dir=CONF_DIR):
        return compose(config_name="config", overrides=overrides)


# The debug=smoke preset (tiny model, short windows, CPU) with the learning rate the tests train at;
# without the curves (tests/test_plot.py draws them), which would cost each run a second or two.
TINY_RUN = ["debug=smoke", "log_interval=5", "optim.warmup_iters=5", "optim.lr=3e-3", "logger=[console,jsonl]"]
CURRICULUM_CHOICES = {"masking", "stages", "experiment"}
UNSTAGED_MODES = {f"mode={name}" for name, mode in MODES.items() if not mode.staged}


def tiny_overrides(corpus_file: Path, *extra: str) -> list[str]:
    """A tiny run on the generated corpus; the curriculum modes train sticky masking alone unless
    `extra` chooses the masking, the stages or an experiment itself."""
    chosen = {override.split("=", 1)[0] for override in extra}
    staged = not UNSTAGED_MODES.intersection(extra)
    curriculum = ["masking=sticky"] if staged and not chosen & CURRICULUM_CHOICES else []
    return ["data=text", f"data.path={corpus_file}", *TINY_RUN, *curriculum, *extra]


def train(run_dir: Path, overrides: list[str]):
    """Build and run a trainer in-process; returns it and what it printed."""
    out = io.StringIO()
    trainer = build_trainer(plan_job(compose_config(overrides), run_dir, overrides), Console(file=out, width=200))
    trainer.fit()
    return trainer, out.getvalue()


@pytest.fixture(scope="session")
def unmasking_checkpoint(tmp_path_factory, corpus_file) -> Path:
    """A small trained unmasking model, for the modes and transfers that build on one."""
    run_dir = tmp_path_factory.mktemp("unmasking")
    train(run_dir, tiny_overrides(corpus_file, "max_iters=150", "eval_interval=150", "optim.lr=5e-3"))
    return run_dir / "checkpoints" / "best.pt"


def run_cli(*args: str, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "trainer", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env={**os.environ, "COLUMNS": "200"},
        timeout=300,
    )


def assert_rejected(result: subprocess.CompletedProcess, *fragments: str) -> None:
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2, result.stderr
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    for fragment in fragments:
        assert fragment in lines[0]


def run_in_process(monkeypatch, capsys, cwd, *args: str) -> subprocess.CompletedProcess:
    """`python -m trainer ARGS` in this process: the same main(), exit code and stderr as run_cli,
    without a second of imports per command (for the rows rejected before training)."""
    monkeypatch.chdir(cwd)
    monkeypatch.setattr(sys, "argv", ["trainer", *args])
    code = 0
    try:
        cli.main()
    except SystemExit as exit:  # anything else, a traceback, fails the test
        code = exit.code
    finally:
        GlobalHydra.instance().clear()
    out, err = capsys.readouterr()
    return subprocess.CompletedProcess(list(args), code, out, err)


def command_in_process(monkeypatch, capsys, cwd, main, name: str, *args: str) -> tuple[int, str, str]:
    """`python -m NAME ARGS` of a command's `main` in this process: (exit code, stdout, stderr)."""
    monkeypatch.chdir(cwd)
    monkeypatch.setattr(sys, "argv", [name, *args])
    code = 0
    try:
        main()
    except SystemExit as exit:
        code = exit.code
    finally:
        GlobalHydra.instance().clear()
    out, err = capsys.readouterr()
    return code, out, err
