"""Resuming: eval_only, best.pt after a kill or a new line of training, re-launched sweeps."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from tests.conftest import assert_rejected, generated_text, run_cli, run_in_process, tiny_overrides, train
from trainer.checkpoint import BEST, CheckpointDirectory
from trainer.errors import ConfigError

LONG_ENOUGH = ("max_iters=8", "eval_interval=4", "checkpoint.keep_last=5")


def files_of(folder) -> dict:
    return {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in folder.rglob("*") if p.is_file()}


def records(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_eval_only_repeats_the_recorded_evaluation_and_writes_nothing_else(tmp_path, corpus_file, monkeypatch, capsys):
    run_dir = tmp_path / "run"
    args = tiny_overrides(corpus_file, *LONG_ENOUGH)
    train(run_dir, args)
    before = files_of(run_dir)

    result = run_in_process(
        monkeypatch, capsys, tmp_path, *args, "resume=auto", "eval_only=true", f"hydra.run.dir={run_dir}"
    )
    assert result.returncode == 0, result.stderr
    evaluations = run_dir / "evaluations.jsonl"
    assert {p: v for p, v in files_of(run_dir).items() if p != evaluations} == before
    (evaluation,) = records(evaluations)
    (recorded,) = [r for r in records(run_dir / "metrics.jsonl") if "val/loss" in r and r["step"] == 8]
    assert evaluation["step"] == 8 and evaluation["checkpoint"].endswith("ckpt_0000008.pt")
    assert evaluation["val/loss"] == recorded["val/loss"] and evaluation["train/loss"] == recorded["train/loss"]
    assert "eval at step 8" in result.stdout and str(evaluations) in result.stdout


def test_eval_only_of_a_checkpoint_path_evaluates_that_step(tmp_path, corpus_file, monkeypatch, capsys):
    run_dir = tmp_path / "run"
    args = tiny_overrides(corpus_file, *LONG_ENOUGH)
    train(run_dir, args)
    elsewhere = tmp_path / "eval"
    checkpoint = run_dir / "checkpoints" / "ckpt_0000004.pt"
    result = run_in_process(
        monkeypatch, capsys, tmp_path, *args, f"resume={checkpoint}", "eval_only=true", f"hydra.run.dir={elsewhere}"
    )
    assert result.returncode == 0, result.stderr
    assert [p.name for p in elsewhere.iterdir()] == ["evaluations.jsonl"]
    (evaluation,) = records(elsewhere / "evaluations.jsonl")
    (recorded,) = [r for r in records(run_dir / "metrics.jsonl") if "val/loss" in r and r["step"] == 4]
    assert evaluation["step"] == 4 and evaluation["val/loss"] == recorded["val/loss"]


class Killed(BaseException):
    """The process dying at this point (nothing after it runs, no handler catches it)."""


def test_a_kill_before_best_pt_is_linked_is_repaired_on_resume(tmp_path, corpus_file, monkeypatch):
    args = tiny_overrides(corpus_file, *LONG_ENOUGH)
    link_best = CheckpointDirectory._link_best

    def killed_at_step_8(self, path):
        if path.name == "ckpt_0000008.pt":
            raise Killed
        link_best(self, path)

    monkeypatch.setattr(CheckpointDirectory, "_link_best", killed_at_step_8)
    with pytest.raises(Killed):
        train(tmp_path, args)
    monkeypatch.setattr(CheckpointDirectory, "_link_best", link_best)
    folder = tmp_path / "checkpoints"
    saved = torch.load(folder / "ckpt_0000008.pt", weights_only=True)
    assert saved["state"]["best_step"] == 8  # the setup: step 8 was the best when the kill came
    assert os.path.samefile(folder / BEST, folder / "ckpt_0000004.pt")

    _, printed = train(tmp_path, [*args, "resume=auto"])
    assert os.path.samefile(folder / BEST, folder / "ckpt_0000008.pt")
    assert "best.pt now holds step 8" in printed


def test_resuming_an_earlier_checkpoint_takes_best_pt_back_to_its_line(tmp_path, corpus_file):
    args = tiny_overrides(corpus_file, *LONG_ENOUGH)
    train(tmp_path, args)
    folder = tmp_path / "checkpoints"
    assert os.path.samefile(folder / BEST, folder / "ckpt_0000008.pt")
    train(tmp_path, [*args, f"resume={folder / 'ckpt_0000004.pt'}", "max_iters=4"])
    assert os.path.samefile(folder / BEST, folder / "ckpt_0000004.pt")


def fake_checkpoint(path, step: int) -> None:
    torch.save({"state": {"step": step}}, path)


@pytest.mark.parametrize(
    "best_step,best_pt_step,kept",
    [
        (4, 4, True),  # ckpt_4 rotated away, best.pt still holds it: right
        (4, 12, False),  # best.pt holds a step of an abandoned line
        (None, 12, False),  # the state resumed had no evaluation yet
    ],
)
def test_best_pt_of_a_rotated_step_is_kept_only_if_it_holds_that_step(tmp_path, best_step, best_pt_step, kept):
    checkpoints = CheckpointDirectory(tmp_path, keep_last=2)
    fake_checkpoint(tmp_path / BEST, best_pt_step)
    fake_checkpoint(checkpoints.path_of(8), 8)
    message = checkpoints.check_best(best_step)
    assert (tmp_path / BEST).exists() == kept
    assert (message is None) == kept
    if not kept:
        assert f"removed best.pt (step {best_pt_step})" in message


def test_a_relaunched_sweep_whose_jobs_now_mean_other_values_is_refused_job_by_job(
    tmp_path, corpus_file, monkeypatch, capsys
):
    sweep = tmp_path / "sweep"
    args = [*tiny_overrides(corpus_file, "eval_interval=2"), f"hydra.sweep.dir={sweep}"]
    first = run_cli("-m", *args, "max_iters=2", "optim.lr=1e-3,2e-3", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    before = files_of(sweep)

    swapped = run_in_process(
        monkeypatch, capsys, tmp_path, "-m", *args, "max_iters=4", "resume=auto", "optim.lr=2e-3,1e-3"
    )
    assert_rejected(swapped, "job 0", "optim.lr: 0.001 -> 0.002", "job 1", "optim.lr: 0.002 -> 0.001")
    assert files_of(sweep) == before

    longer = run_cli("-m", *args, "max_iters=4", "resume=auto", "optim.lr=1e-3,2e-3", cwd=tmp_path)
    assert longer.returncode == 0, longer.stderr
    for job in ("0", "1"):
        assert f"resumed from {sweep / job / 'checkpoints' / 'ckpt_0000002.pt'} at step 2" in longer.stdout
        assert [r["step"] for r in records(sweep / job / "metrics.jsonl") if "val/loss" in r] == [0, 2, 4]


def test_resume_path_of_another_folder_into_a_used_one_is_refused(tmp_path, corpus_file):
    args = tiny_overrides(corpus_file, *LONG_ENOUGH)
    train(tmp_path / "a", args)
    train(tmp_path / "b", args)
    before = files_of(tmp_path / "a")
    with pytest.raises(ConfigError, match="belongs to another run folder"):
        train(tmp_path / "a", [*args, f"resume={tmp_path / 'b' / 'checkpoints' / 'ckpt_0000008.pt'}"])
    assert files_of(tmp_path / "a") == before
    # into a new folder it starts a run of its own from that checkpoint; a run folder names its latest
    resumed, _ = train(tmp_path / "c", [*args, "max_iters=12", f"resume={tmp_path / 'b'}"])
    assert resumed.files.resumed_from == tmp_path / "b" / "checkpoints" / "ckpt_0000008.pt" and resumed.state.step == 12


def test_a_checkpoint_abandoned_by_an_earlier_resume_is_refused(tmp_path, corpus_file):
    args = tiny_overrides(corpus_file, "max_iters=12", "eval_interval=4", "checkpoint.keep_last=10")
    train(tmp_path, args)
    folder = tmp_path / "checkpoints"
    train(tmp_path, [*args, f"resume={folder / 'ckpt_0000004.pt'}", "max_iters=8"])  # a new line: 4, 8
    assert (folder / "ckpt_0000012.pt").exists()  # the abandoned step, not yet passed by the new line
    with pytest.raises(ConfigError, match="not on the current line"):
        train(tmp_path, [*args, f"resume={folder / 'ckpt_0000012.pt'}", "max_iters=16"])


def test_max_iters_below_the_checkpoint_is_refused(tmp_path, corpus_file):
    args = tiny_overrides(corpus_file, *LONG_ENOUGH)
    train(tmp_path, args)
    with pytest.raises(ConfigError, match="below the step of the checkpoint resumed"):
        train(tmp_path, [*args, "resume=auto", "max_iters=6"])


def test_resuming_a_float32_run_with_float16_starts_the_loss_scale_afresh(tmp_path, corpus_file):
    args = tiny_overrides(corpus_file, "max_iters=4", "eval_interval=4")
    train(tmp_path, args)
    resumed, _ = train(tmp_path, [*args, "resume=auto", "max_iters=6", "system.dtype=float16"])
    assert resumed.state.step == 6 and resumed.optimization.scaler.is_enabled()


def test_a_stop_signal_before_training_leaves_nothing(tmp_path, corpus_file):
    """SIGINT while the command is still loading or building: one line, 130, no run folder."""
    run_dir = tmp_path / "run"
    process = subprocess.Popen(
        [sys.executable, "-m", "trainer", *tiny_overrides(corpus_file), f"hydra.run.dir={run_dir}"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    time.sleep(1.5)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr
    assert stderr.strip().splitlines() == ["stopped by SIGINT before training started: nothing was trained or kept"]
    assert not run_dir.exists()


DATA = Path(__file__).resolve().parent / "data"


def test_a_checkpoint_of_the_first_format_resumes_exactly(tmp_path):
    """tests/data/format1_step4.pt was written by the trainer before its parts kept their own state
    (unmasking, entropy penalty on, the generated corpus); resumed to step 8 it reaches the weights
    that trainer reached at step 8 (tests/data/format1_step8_model.pt, continued from step 4 with one
    torch thread, as here: the sums of two threads round differently), bit for bit."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        resume_the_first_format(tmp_path)
    finally:
        torch.set_num_threads(threads)


def resume_the_first_format(tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(generated_text(60_000))
    common = ["debug=smoke", "mode=unmasking", "data=text", f"data.path={corpus}", "eval_interval=4", "logger=[]"]
    resume = [f"resume={DATA / 'format1_step4.pt'}", "resume_changes=[data.path]"]
    trainer, _ = train(tmp_path / "run", [*common, "loss.entropy_penalty.max=0.5", "max_iters=8", *resume])
    assert trainer.state.step == 8
    expected = torch.load(DATA / "format1_step8_model.pt", weights_only=True)
    for name, value in trainer.runtime.raw_model.state_dict().items():
        assert torch.equal(value, expected[name]), name


def test_resume_auto_passes_over_a_damaged_newest_checkpoint(tmp_path, corpus_file, monkeypatch, capsys):
    """A torn newest checkpoint (a disk fault, a bad copy): resume=auto continues from the latest
    intact one of the line, says so in one line, and the line goes on past the damaged step."""
    run_dir = tmp_path / "run"
    args = tiny_overrides(corpus_file, *LONG_ENOUGH)
    train(run_dir, args)
    checkpoints = run_dir / "checkpoints"
    damaged = checkpoints / "ckpt_0000008.pt"
    damaged.write_bytes(damaged.read_bytes()[:1000])
    result = run_in_process(
        monkeypatch, capsys, tmp_path, *args, "max_iters=12", "resume=auto", f"hydra.run.dir={run_dir}"
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    said = [line for line in result.stdout.splitlines() if "cannot be read" in line]
    assert said == [
        f"resume: {damaged} cannot be read; continuing from ckpt_0000004.pt, the latest intact checkpoint of the line"
    ]
    assert f"resumed from {checkpoints / 'ckpt_0000004.pt'} at step 4" in result.stdout
    assert CheckpointDirectory(checkpoints, 5).lineage() == [4, 8, 12]
    assert torch.load(damaged, weights_only=True)["state"]["step"] == 8  # written again, whole
    assert not list(checkpoints.glob(".*.tmp"))


def test_a_run_whose_best_is_step_0_keeps_it_as_best_pt(tmp_path, corpus_file, monkeypatch):
    from trainer.loop import Trainer

    evaluate = Trainer.evaluate

    def worse_later(self):  # every evaluation after step 0 is worse than the first
        metrics = evaluate(self)
        return {**metrics, "val/loss": metrics["val/loss"] + self.state.step}

    monkeypatch.setattr(Trainer, "evaluate", worse_later)
    trainer, _ = train(tmp_path, tiny_overrides(corpus_file, "max_iters=8", "eval_interval=4"))
    best = tmp_path / "checkpoints" / "best.pt"
    assert trainer.state.best_step == 0 and best.is_file()
    assert torch.load(best, weights_only=True)["state"]["step"] == 0
    resumed, printed = train(tmp_path, tiny_overrides(corpus_file, "max_iters=12", "eval_interval=4", "resume=auto"))
    assert best.is_file() and "removed best.pt" not in printed  # the resume keeps it: it is the line's best
