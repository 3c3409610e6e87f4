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
    evals = [r for r in map(json.loads, (tmp_path / "metrics.jsonl").read_text().splitlines()) if "val/loss" in r]
    assert evals[0]["step"] == 0 and evals[-1]["step"] == 600
    assert min(r["val/loss"] for r in evals) < 0.6 * evals[0]["val/loss"]
    assert all(f"val/stage_{i}_loss" in evals[-1] for i in range(4))
    assert str(tmp_path / "checkpoints" / "ckpt_0000600.pt") in result.stdout
    assert str(tmp_path / "metrics.jsonl") in result.stdout
