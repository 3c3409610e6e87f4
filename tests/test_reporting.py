"""What a run reports and keeps: the timing breakdown, mask statistics, the code snapshot and the
end-of-run and sweep summaries."""

import csv
import hashlib
import json
import subprocess

import pytest

from tests.conftest import run_cli, tiny_overrides, train
from trainer.reporting.plot import logger as plot_logger
from trainer.reporting.timing import PHASES
from trainer.snapshot import ROOT, source_files


def records(run_dir, name="metrics.jsonl") -> list[dict]:
    return [json.loads(line) for line in (run_dir / name).read_text().splitlines()]


def test_the_timing_phases_add_up_to_the_wall_time_of_each_interval(tmp_path, corpus_file):
    train(tmp_path, tiny_overrides(corpus_file, "max_iters=30", "eval_interval=10", "log_interval=5"))
    logs = [r for r in records(tmp_path) if "time/interval_ms" in r]
    assert [r["step"] for r in logs] == [5, 10, 15, 20, 25, 30]
    for record in logs:
        phases = sum(record[f"time/{phase}_ms"] for phase in PHASES)
        assert phases == pytest.approx(record["time/interval_ms"], rel=0.02)
        assert record["time/forward_ms"] > 0 and record["time/backward_ms"] > 0
    # evaluations (steps 0, 10, 20) and their checkpoints (10, 20) land in the intervals that hold them
    assert logs[0]["time/evaluation_ms"] > 0 and logs[1]["time/evaluation_ms"] == 0
    assert logs[2]["time/checkpoint_ms"] > 0 and logs[1]["time/checkpoint_ms"] == 0


def test_mask_statistics_of_the_staged_modes(tmp_path, corpus_file):
    args = tiny_overrides(corpus_file, "stages=easy_to_hard", "stages.mix=all", "gradient_accumulation_steps=2")
    train(tmp_path, [*args, "max_iters=4", "log_interval=2"])
    (first, second) = [r for r in records(tmp_path) if "mask/ratio_mean" in r]
    for record in (first, second):
        assert 0 <= record["mask/ratio_min"] <= record["mask/ratio_mean"] <= record["mask/ratio_max"] <= 1
        rows = [record[f"mask/stage_{i}_rows"] for i in range(4)]
        assert sum(rows) == 2 * 8 and all(n > 0 for n in rows)  # 2 micro-batches of 8 rows, all stages mixed


def test_no_mask_statistics_without_a_curriculum(tmp_path, corpus_file):
    train(tmp_path, tiny_overrides(corpus_file, "mode=language_model", "log_interval=2"))
    assert not any(key.startswith("mask/") for record in records(tmp_path) for key in record)


def sha256(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_the_snapshot_holds_the_running_code_and_environment(tmp_path, corpus_file):
    train(tmp_path, tiny_overrides(corpus_file))
    copied = sorted(p.relative_to(tmp_path / "source") for p in (tmp_path / "source").rglob("*") if p.is_file())
    assert copied == source_files() and len(copied) > 40
    assert all(sha256(tmp_path / "source" / f) == sha256(ROOT / f) for f in copied)
    assert "torch: " in (tmp_path / "environment.txt").read_text()
    in_git = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True)
    if in_git.returncode == 0:
        assert f"commit: {in_git.stdout.strip()}" in (tmp_path / "git.txt").read_text()
        diff = subprocess.run(["git", "-C", str(ROOT), "diff", "HEAD"], capture_output=True, text=True).stdout
        assert (tmp_path / "git.diff").read_text() == diff


def test_the_run_ends_with_a_summary(tmp_path, corpus_file):
    run_dir = tmp_path / "run"
    result = run_cli(*tiny_overrides(corpus_file, "max_iters=6", "eval_interval=3"), f"hydra.run.dir={run_dir}")
    assert result.returncode == 0, result.stderr
    summary = json.loads((run_dir / "summary.json").read_text())
    evals = [r for r in records(run_dir) if "val/loss" in r]
    best = min(evals, key=lambda r: r["val/loss"])
    assert summary["status"] == "done" and summary["step"] == 6 and summary["tokens_seen"] == 6 * 8 * 32
    assert summary["best_val_loss"] == best["val/loss"] and summary["best_step"] == best["step"]
    assert summary["final"]["val/loss"] == evals[-1]["val/loss"]
    assert set(summary["time_ms"]) == set(PHASES)
    logged = sum(r["time/evaluation_ms"] for r in records(run_dir) if "time/evaluation_ms" in r)
    assert summary["time_ms"]["evaluation"] > logged  # the final evaluation, after the last log step, counts
    assert f"best val loss {best['val/loss']:.4f} at step {best['step']}" in result.stdout
    assert str(run_dir / "checkpoints" / "best.pt") in result.stdout


def sweep_rows(sweep) -> list[dict]:
    with (sweep / "sweep_summary.csv").open() as file:
        return list(csv.DictReader(file))


def test_a_sweep_ends_with_a_table_of_its_jobs_each_once(tmp_path, corpus_file):
    sweep = tmp_path / "sweep"
    args = [*tiny_overrides(corpus_file), f"hydra.sweep.dir={sweep}", "optim.lr=1e-3,2e-3"]
    assert run_cli("-m", *args, cwd=tmp_path).returncode == 0
    longer = run_cli("-m", *args, "resume=auto", "max_iters=6", cwd=tmp_path)
    assert longer.returncode == 0, longer.stderr
    rows = sweep_rows(sweep)
    # continued from their checkpoints at step 4 and finished by this launch
    assert [(r["job"], r["status"], r["step"]) for r in rows] == [("0", "resumed", "6"), ("1", "resumed", "6")]
    assert "optim.lr=0.001" in rows[0]["overrides"] and "optim.lr=0.002" in rows[1]["overrides"]
    assert "sweep_summary.csv" in longer.stdout


def test_a_diverged_job_does_not_stop_the_sweep(tmp_path, corpus_file):
    sweep = tmp_path / "sweep"
    fault = "stability.inject=[{step:1,target:loss,kind:nan}]"
    result = run_cli(
        "-m", *tiny_overrides(corpus_file), fault, "stability.policy=raise,recover", f"hydra.sweep.dir={sweep}"
    )
    assert result.returncode == 3
    assert result.stderr.strip().splitlines()[-1].startswith("error: 1 job(s) of the sweep diverged")
    assert [(r["job"], r["status"]) for r in sweep_rows(sweep)] == [("0", "diverged"), ("1", "done")]


def test_the_default_loggers_draw_the_curves_after_each_evaluation(tmp_path, corpus_file, monkeypatch):
    """A real run with the default loggers: curves.png is a PNG once the run ends, and was drawn at
    the evaluations before (a draw per evaluation, the last one at the end)."""
    drawn = []
    draw = plot_logger.plot_runs
    monkeypatch.setattr(plot_logger, "plot_runs", lambda *args: drawn.append(args) or draw(*args))
    args = [a for a in tiny_overrides(corpus_file, "max_iters=6", "eval_interval=3") if not a.startswith("logger=")]
    train(tmp_path, args)
    assert (tmp_path / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert 2 <= len(drawn) <= 4  # evaluations at 0, 3, 6 (merged when one comes during a draw) and the end
