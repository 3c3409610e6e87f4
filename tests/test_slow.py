"""Long end-to-end runs: `make test ARGS="-m slow"` (deselected by default)."""

import json
import os
import subprocess
import sys

import pytest


@pytest.mark.slow
def test_the_default_run_learns(tmp_path):
    """`python -m trainer` with no arguments: unmasking with the easy_to_hard stages on the built-in corpus."""
    result = subprocess.run(
        [sys.executable, "-m", "trainer", f"hydra.run.dir={tmp_path}"],
        capture_output=True,
        text=True,
        timeout=900,
        env={**os.environ, "COLUMNS": "160"},
    )
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in records if "val/loss" in r]
    # the curriculum visibly advances: at least two stage changes, each announced on the console
    advances = [r for r in records if r.get("event") == "stage_advance"]
    assert len(advances) >= 2 and [r["stage/index"] for r in advances] == list(range(1, len(advances) + 1))
    assert result.stdout.count("stage ") >= 2 and "-> 2 (" in result.stdout
    assert evals[0]["step"] == 0 and evals[-1]["step"] == 600
    assert min(r["val/loss"] for r in evals) < 0.6 * evals[0]["val/loss"]
    assert all(f"val/stage_{i}_loss" in evals[-1] for i in range(4))
    assert str(tmp_path / "checkpoints" / "ckpt_0000600.pt") in result.stdout
    assert str(tmp_path / "metrics.jsonl") in result.stdout
