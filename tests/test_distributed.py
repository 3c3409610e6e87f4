"""Several processes: `torchrun --nproc_per_node=2 -m trainer ...` with gloo on the CPU equals one
process with the same config, checkpoints move between the two, and only rank 0 writes."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from tests.conftest import tiny_overrides

ROOT = Path(__file__).resolve().parent.parent  # this checkout's trainer, whatever the working folder
# random masking: the micro-batches hold different numbers of targets, so their shares of the step
# must be counted over both ranks; 3 validation batches split 1 + 2; four micro-batches, two per rank
RUN = ("masking=random", "gradient_accumulation_steps=4", "eval_iters=3", "eval_interval=3", "log_interval=1")
RUN += ("system.threads=1", "max_iters=6")


def launch(cwd: Path, *args: str, processes: int = 1, wait: bool = True):
    """`python -m trainer ARGS`, or under `torchrun --standalone --nproc_per_node=processes`."""
    launcher = ["-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}"] if processes > 1 else []
    command = [sys.executable, *launcher, "-m", "trainer", *args]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "200", "OMP_NUM_THREADS": "1"}
    cwd.mkdir(parents=True, exist_ok=True)
    if not wait:
        return subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def records(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def evaluations(run_dir: Path) -> dict[int, dict]:
    return {r["step"]: r for r in records(run_dir) if "val/loss" in r}


def parameters(run_dir: Path, step: int) -> dict[str, torch.Tensor]:
    path = run_dir / "checkpoints" / f"ckpt_{step:07d}.pt"
    return torch.load(path, weights_only=True)["model"]


def assert_same_parameters(a: dict, b: dict, tolerance: float = 1e-6) -> None:
    assert a.keys() == b.keys()
    worst = max((a[key] - b[key]).abs().max().item() for key in a)
    assert worst < tolerance, worst


@pytest.fixture(scope="module")
def runs(tmp_path_factory, corpus_file) -> dict[str, Path]:
    """Six steps in two processes (default run_name: a timestamp) and in one; then each resumed to
    step 9 the other way: the two-process checkpoint in one process, the one-process one in two."""
    root = tmp_path_factory.mktemp("distributed")
    overrides = tiny_overrides(corpus_file, *RUN)
    two = launch(root / "two", *overrides, processes=2)
    assert two.returncode == 0, two.stderr
    one = launch(root / "one", *overrides, "run_name=one")
    assert one.returncode == 0, one.stderr
    (two_dir,) = (root / "two" / "outputs").iterdir()
    resumed = tiny_overrides(corpus_file, *RUN, "max_iters=9", "resume=auto")
    two_then_one = launch(root / "two", *resumed, f"run_name={two_dir.name}")
    assert two_then_one.returncode == 0, two_then_one.stderr
    one_then_two = launch(root / "one", *resumed, "run_name=one", processes=2)
    assert one_then_two.returncode == 0, one_then_two.stderr
    return {"two": two_dir, "one": root / "one" / "outputs" / "one", "two_stdout": two.stdout, "root": root}


def test_two_processes_train_as_one_with_the_same_micro_batches(runs):
    two, one = runs["two"], runs["one"]
    assert_same_parameters(parameters(two, 6), parameters(one, 6))
    steps = {r["step"]: r for r in records(two) if "grad_norm" in r}
    alone = {r["step"]: r for r in records(one) if "grad_norm" in r}
    assert sorted(steps) == sorted(alone) == list(range(1, 10))
    for step in steps:  # the step's loss is summed over both ranks' micro-batches
        assert steps[step]["train/loss"] == pytest.approx(alone[step]["train/loss"], rel=1e-5)
        assert steps[step]["grad_norm"] == pytest.approx(alone[step]["grad_norm"], rel=1e-4)
    assert {r["step"]: r["tokens_per_second"] > 0 for r in records(two) if "grad_norm" in r}


def test_validation_sharded_over_two_processes_equals_one(runs):
    two, one = evaluations(runs["two"]), evaluations(runs["one"])
    assert sorted(two) == sorted(one) == [0, 3, 6, 9]
    for step in two:
        metrics = [key for key in one[step] if key.startswith("val/")]
        assert "val/stage_0_snr_median" in metrics and "val/nll_bound" in metrics
        for key in metrics:  # every value, medians included, as one process computes it
            assert two[step][key] == pytest.approx(one[step][key], rel=1e-5, abs=1e-7), (step, key)
        assert two[step]["train/loss"] == pytest.approx(one[step]["train/loss"], rel=1e-5)


def test_checkpoints_move_between_two_processes_and_one(runs):
    """Step 9: two processes then one, against one process then two."""
    assert_same_parameters(parameters(runs["two"], 9), parameters(runs["one"], 9))
    summary = json.loads((runs["one"] / "summary.json").read_text())
    assert summary["status"] == "done" and summary["step"] == 9
    assert summary["tokens_seen"] == 9 * 4 * 8 * 32  # steps x micro-batches x rows x tokens, over both ranks


def test_only_rank_0_writes_and_prints(runs):
    folders = list((runs["root"] / "two" / "outputs").iterdir())
    assert folders == [runs["two"]]  # one run folder, though each rank read the start time itself
    files = {p.name for p in runs["two"].iterdir()}
    assert {".hydra", "checkpoints", "metrics.jsonl", "summary.json", "source"} <= files
    assert not list(runs["two"].rglob("*.tmp"))
    stdout = runs["two_stdout"]
    assert stdout.count("run directory:") == 1 and stdout.count("eval at step 6") == 1
    steps = [r["step"] for r in records(runs["two"]) if "grad_norm" in r]
    assert steps == sorted(set(steps))  # every step recorded once


def test_accumulation_not_divisible_by_the_processes_is_refused(tmp_path, corpus_file):
    """Each process ends with exit code 2 and rank 0's one line, before any rendezvous or file."""
    overrides = tiny_overrides(corpus_file, "gradient_accumulation_steps=3", "run_name=bad")
    alone = subprocess.run(
        [sys.executable, "-m", "trainer", *overrides],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(ROOT), "WORLD_SIZE": "2", "RANK": "0"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert alone.returncode == 2, alone.stderr
    assert alone.stderr.strip().splitlines() == [
        "error: gradient_accumulation_steps: 3 micro-batches cannot be shared evenly by the 2 processes torchrun "
        "started (each runs gradient_accumulation_steps / processes); allowed: a multiple of 2 (2, 4, 6, ...)"
    ]
    launched = launch(tmp_path, *overrides, processes=2)
    errors = [line for line in launched.stderr.splitlines() if line.startswith("error:")]
    assert errors == alone.stderr.strip().splitlines()  # once: the other rank says nothing
    assert "exitcode  : 2" in launched.stderr  # torchrun's own report of the failed process
    assert not (tmp_path / "outputs").exists()


def child_with_rank(parent: int, rank: int) -> int:
    """The pid of torchrun's worker of `rank` (from /proc: its parent and its RANK variable)."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            environ = (entry / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == parent and f"RANK={rank}".encode() in environ:
            return int(entry.name)
    raise AssertionError(f"no worker of rank {rank}")


@pytest.mark.slow  # a stop signal of one process: tests/test_preemption.py, by default
@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="finds torchrun's workers in /proc")
def test_a_signal_to_one_rank_stops_every_rank_with_a_checkpoint(tmp_path, corpus_file):
    overrides = tiny_overrides(corpus_file, *RUN[:-1], "max_iters=400", "eval_interval=200", "run_name=long")
    process = launch(tmp_path, *overrides, processes=2, wait=False)
    metrics = tmp_path / "outputs" / "long" / "metrics.jsonl"
    deadline = time.monotonic() + 120
    while not (metrics.exists() and metrics.read_text().count("grad_norm") >= 3):
        assert process.poll() is None and time.monotonic() < deadline, process.communicate()
        time.sleep(0.2)
    os.kill(child_with_rank(process.pid, 1), signal.SIGTERM)
    stdout, stderr = process.communicate(timeout=120)
    stopped = [line for line in stderr.splitlines() if line.startswith("stopped by SIGTERM")]
    assert len(stopped) == 1, stderr
    assert stderr.count("exitcode  : 143") >= 1 and "exitcode  : 2" not in stderr
    summary = json.loads((metrics.parent / "summary.json").read_text())
    step = summary["step"]
    assert summary["status"] == "stopped by SIGTERM" and 3 <= step < 400
    assert (metrics.parent / "checkpoints" / f"ckpt_{step:07d}.pt").is_file()
    assert f"at step {step}: checkpoint" in stopped[0]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (NCCL, peak memory)")
def test_a_cuda_run_records_its_peak_memory_and_nccl_trains(tmp_path, corpus_file):
    overrides = tiny_overrides(corpus_file, "system=cuda", "max_iters=2", "eval_interval=2", "run_name=cuda")
    result = launch(tmp_path, *overrides)
    assert result.returncode == 0, result.stderr
    summary = json.loads((tmp_path / "outputs" / "cuda" / "summary.json").read_text())
    assert summary["status"] == "done" and summary["peak_memory_bytes"] > 0
    if torch.cuda.device_count() < 2:
        return
    overrides = [*overrides[:-1], "run_name=nccl", "gradient_accumulation_steps=2"]
    result = launch(tmp_path, *overrides, processes=2)
    assert result.returncode == 0, result.stderr
    summary = json.loads((tmp_path / "outputs" / "nccl" / "summary.json").read_text())
    assert summary["status"] == "done" and summary["tokens_seen"] == 2 * 2 * 8 * 32
