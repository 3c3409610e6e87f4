"""The command line as a user meets it: `python -m trainer ...` in a subprocess."""

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import TINY_RUN, tiny_overrides, train


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


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, corpus_file):
    run_dir = tmp_path_factory.mktemp("finished")
    train(run_dir, tiny_overrides(corpus_file, "max_iters=4", "eval_interval=4"))
    return run_dir


BAD_INPUTS = [
    (["mode=foo"], ["mode=foo", "language_model", "unmasking"]),
    (["masking=zigzag"], ["masking=zigzag", "random", "span", "sticky"]),
    (["optim.lerning_rate=0.1"], ["optim.lerning_rate", "lr"]),
    (["batch_sise=4"], ["batch_sise", "batch_size"]),
    (["masking.target_masked_ratio=1.5"], ["masking.target_masked_ratio", "[0, 1]"]),
    (["masking=random", "masking.max_masked_ratio=-0.1"], ["masking.max_masked_ratio", "[0, 1]"]),
    (["masking.p1_probability=0"], ["masking.p1_probability", "(0, 1]"]),
    (["data=text"], ["data.path", "missing"]),
    (["data=text", "data.path=/no/such/file.txt"], ["data.path", "does not exist"]),
    (["resume=/no/such/ckpt.pt"], ["resume", "does not exist"]),
    (["model.n_head=3"], ["model.n_head", "divisor"]),
]


@pytest.mark.parametrize("args,fragments", BAD_INPUTS, ids=[" ".join(a) for a, _ in BAD_INPUTS])
def test_bad_input_is_one_line_and_writes_nothing(tmp_path, args, fragments):
    run_dir = tmp_path / "run"
    result = run_cli(*args, *TINY_RUN, f"hydra.run.dir={run_dir}", cwd=tmp_path)
    assert_rejected(result, *fragments)
    assert not run_dir.exists()
    assert list(tmp_path.iterdir()) == []


def test_corpus_shorter_than_a_block(tmp_path):
    short = tmp_path / "short.txt"
    short.write_text("To be, or not to be.\n" * 10)
    result = run_cli("data=text", f"data.path={short}", *TINY_RUN, "block_size=64", f"hydra.run.dir={tmp_path / 'run'}")
    assert_rejected(result, "data:", "block_size")
    assert not (tmp_path / "run").exists()


def test_corrupt_checkpoint(tmp_path, corpus_file):
    bad = tmp_path / "ckpt_0000010.pt"
    bad.write_bytes(b"\x80\x02garbage")
    result = run_cli(*tiny_overrides(corpus_file), f"resume={bad}", f"hydra.run.dir={tmp_path / 'run'}")
    assert_rejected(result, "resume", "not a readable checkpoint")
    assert not (tmp_path / "run").exists()


def test_checkpoint_of_another_architecture(tmp_path, corpus_file, finished_run):
    before = {p: p.stat().st_mtime_ns for p in finished_run.rglob("*")}
    result = run_cli(
        *tiny_overrides(corpus_file),
        "model.n_embd=96",
        "model.n_head=2",
        "resume=auto",
        "max_iters=8",
        f"hydra.run.dir={finished_run}",
    )
    assert_rejected(result, "resume", "n_embd: 64 -> 96")
    assert {p: p.stat().st_mtime_ns for p in finished_run.rglob("*")} == before


def test_fresh_run_into_a_used_directory(corpus_file, finished_run):
    before = {p: p.stat().st_mtime_ns for p in finished_run.rglob("*")}
    result = run_cli(*tiny_overrides(corpus_file), f"hydra.run.dir={finished_run}")
    assert_rejected(result, "resume", "resume=auto")
    assert {p: p.stat().st_mtime_ns for p in finished_run.rglob("*")} == before


def test_a_run_writes_metrics_checkpoints_and_config(tmp_path, corpus_file):
    run_dir = tmp_path / "run"
    result = run_cli(
        *tiny_overrides(corpus_file),
        "mode=language_model",
        "max_iters=6",
        "eval_interval=3",
        f"hydra.run.dir={run_dir}",
    )
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if "val/loss" in r] == [0, 3, 6]
    assert {"step", "train/loss"} <= set(records[0])
    assert (run_dir / "checkpoints" / "ckpt_0000006.pt").is_file()
    assert "name: language_model" in (run_dir / ".hydra" / "config.yaml").read_text()
    assert str(run_dir / "checkpoints" / "ckpt_0000006.pt") in result.stdout
    assert str(run_dir / "metrics.jsonl") in result.stdout


def test_multirun_sweeps_masking(tmp_path, corpus_file):
    result = run_cli(
        "-m",
        "masking=sticky,random",
        *tiny_overrides(corpus_file),
        "max_iters=2",
        "eval_interval=2",
        f"hydra.sweep.dir={tmp_path}",
    )
    assert result.returncode == 0, result.stderr
    for job, masking in (("0", "sticky"), ("1", "random")):
        assert (tmp_path / job / "checkpoints" / "ckpt_0000002.pt").is_file()
        assert f"type: {masking}" in (tmp_path / job / ".hydra" / "config.yaml").read_text()


def test_naming_a_masking_strategy_implies_the_single_stage():
    from trainer.cli import with_implied_overrides

    assert with_implied_overrides(["masking=random"]) == ["masking=random", "stages=single"]
    assert with_implied_overrides(["-m", "masking=sticky,random"])[-1] == "stages=single"
    assert with_implied_overrides(["masking=random", "stages=canonical14"]) == ["masking=random", "stages=canonical14"]
    assert with_implied_overrides(["masking.p1_probability=0.2"]) == ["masking.p1_probability=0.2"]
    assert with_implied_overrides(["max_iters=5"]) == ["max_iters=5"]


def test_masking_on_the_command_line_means_what_it_says(tmp_path, corpus_file):
    args = [a for a in tiny_overrides(corpus_file, "max_iters=1", "eval_interval=1") if a != "stages=single"]
    result = run_cli("masking=span", *args, f"hydra.run.dir={tmp_path}")
    assert result.returncode == 0, result.stderr
    config = (tmp_path / ".hydra" / "config.yaml").read_text()
    assert "type: span" in config and "train: null" in config
    assert "stages=single" in (tmp_path / ".hydra" / "overrides.yaml").read_text()
