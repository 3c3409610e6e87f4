"""Pre-emption: a signal finishes the current step, writes a checkpoint and stops; resume=auto then
continues exactly as if nothing had happened."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from tests.conftest import tiny_overrides, train
from trainer import build
from trainer.reporting.callbacks import Callback
from trainer.step import StopRequested

COMMON = ("max_iters=8", "eval_interval=3", "model.dropout=0.1", "gradient_accumulation_steps=2")


class SignalAt(Callback):
    """Delivers a pre-emption signal to the trainer when it finishes step `step`."""

    def __init__(self, step: int):
        self.step = step

    def on_step_end(self, trainer, metrics) -> None:
        if trainer.state.step == self.step:
            trainer.request_stop(signal.SIGTERM)


def test_a_stop_checkpoints_and_resume_continues_exactly(tmp_path, corpus_file, monkeypatch):
    straight, _ = train(tmp_path / "a", tiny_overrides(corpus_file, *COMMON))
    original = build.make_callbacks
    monkeypatch.setattr(build, "make_callbacks", lambda *a: _with(original(*a), SignalAt(5)))
    with pytest.raises(StopRequested) as stop:
        train(tmp_path / "b", tiny_overrides(corpus_file, *COMMON))
    assert stop.value.step == 5 and stop.value.checkpoint.name == "ckpt_0000005.pt"
    monkeypatch.setattr(build, "make_callbacks", original)

    resumed, _ = train(tmp_path / "b", tiny_overrides(corpus_file, *COMMON, "resume=auto"))
    assert resumed.state.step == 8
    for a, b in zip(straight.runtime.raw_model.parameters(), resumed.runtime.raw_model.parameters()):
        assert torch.equal(a, b)
    steps = [json.loads(line)["step"] for line in (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()]
    assert steps == [json.loads(line)["step"] for line in (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()]


def _with(callbacks, extra):
    callbacks.add_callback(extra)
    return callbacks


@pytest.mark.parametrize(
    "sig,code",
    [
        (signal.SIGTERM, 143),
        pytest.param(signal.SIGUSR1, 143, marks=pytest.mark.slow),  # handled as SIGTERM is
        pytest.param(signal.SIGUSR2, 143, marks=pytest.mark.slow),
        (signal.SIGINT, 130),
    ],
)
def test_a_signal_stops_the_process_with_a_checkpoint(tmp_path, corpus_file, sig, code):
    args = [*tiny_overrides(corpus_file, "max_iters=100000", "log_interval=1"), f"hydra.run.dir={tmp_path}"]
    process = subprocess.Popen(
        [sys.executable, "-m", "trainer", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    metrics = tmp_path / "metrics.jsonl"
    deadline = time.monotonic() + 120
    while not (metrics.exists() and metrics.read_text().count("train/loss") >= 3):
        assert time.monotonic() < deadline and process.poll() is None, process.stderr.read() if process.poll() else ""
        time.sleep(0.2)
    os.kill(process.pid, sig)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == code, stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"stopped by {signal.Signals(sig).name} at step ")
    step = int(lines[0].split("at step ")[1].split(":")[0])
    assert (tmp_path / "checkpoints" / f"ckpt_{step:07d}.pt").is_file()
    assert "Traceback" not in stderr
