"""End-to-end runs of the Trainer, in-process on a small generated corpus."""

import copy
import io
import json

import pytest
import torch
from rich.console import Console

from tests.conftest import compose_config, tiny_overrides, train
from trainer import checkpoint
from trainer.build import build_trainer
from trainer.checkpoint import CheckpointDirectory, load_checkpoint
from trainer.errors import CheckpointError, ConfigError
from trainer.objectives.staged import masked_rows
from trainer.objectives.unmasking import UnmaskingObjective
from trainer.plan import plan_job


def read_metrics(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("mode", ["language_model", "unmasking"])
def test_each_mode_learns(tmp_path, corpus_file, mode):
    trainer, printed = train(tmp_path, tiny_overrides(corpus_file, f"mode={mode}", "max_iters=60", "eval_interval=30"))
    evals = [r for r in read_metrics(tmp_path) if "val/loss" in r]
    assert [r["step"] for r in evals] == [0, 30, 60]
    assert evals[-1]["val/loss"] < 0.8 * evals[0]["val/loss"]
    assert trainer.state.best_val_loss == min(r["val/loss"] for r in evals)
    logs = [r for r in read_metrics(tmp_path) if "val/loss" not in r]
    assert [r["step"] for r in logs] == list(range(5, 61, 5))
    assert all(r["train/loss"] > 0 and r["lr"] > 0 for r in logs)
    assert str(tmp_path / "metrics.jsonl") in printed


def test_unmasking_eval_reports_spec_metrics(tmp_path, corpus_file):
    trainer, _ = train(
        tmp_path, tiny_overrides(corpus_file, "max_iters=10", "eval_interval=10", "masking.target_masked_ratio=0.25")
    )
    final = [r for r in read_metrics(tmp_path) if "val/loss" in r][-1]
    for key in ("val/p_correct", "val/model_vs_random", "val/accuracy", "val/snr_mean", "val/snr_median"):
        assert key in final
    # sticky masking: exactly ceil(0.25 * 32) = 8 masks in every row
    assert final["val/mask_ratio_min"] == final["val/mask_ratio_max"] == pytest.approx(8 / 32)
    assert final["val/model_vs_random"] == pytest.approx(final["val/p_correct"] * trainer.files.vocab.size, rel=1e-4)


def test_checkpoints_rotate_keep_best_and_load_weights_only(tmp_path, corpus_file):
    train(tmp_path, tiny_overrides(corpus_file, "max_iters=40", "eval_interval=10", "checkpoint.keep_last=2"))
    ckpt_dir = tmp_path / "checkpoints"
    assert sorted(p.name for p in ckpt_dir.glob("ckpt_*.pt")) == ["ckpt_0000030.pt", "ckpt_0000040.pt"]
    assert not list(ckpt_dir.glob(".*tmp"))
    payload = torch.load(ckpt_dir / "ckpt_0000040.pt", weights_only=True)
    assert payload["state"]["step"] == 40
    assert payload["config"]["max_iters"] == 40
    assert payload["vocab"]["mask_id"] == payload["vocab"]["base_size"]
    best = torch.load(ckpt_dir / "best.pt", weights_only=True)
    assert best["state"]["best_val_loss"] == payload["state"]["best_val_loss"]
    assert (tmp_path / ".hydra" / "config.yaml").is_file()


def test_resume_reproduces_the_uninterrupted_run(tmp_path, corpus_file):
    """2N steps in one run == N steps, then resume=auto for N more (same losses and parameters)."""
    common = ("model.dropout=0.1", "eval_interval=10", "optim.lr_decay_iters=40", "gradient_accumulation_steps=2")
    straight, _ = train(tmp_path / "a", tiny_overrides(corpus_file, "max_iters=40", *common))
    train(tmp_path / "b", tiny_overrides(corpus_file, "max_iters=20", *common))
    resumed, printed = train(tmp_path / "b", tiny_overrides(corpus_file, "max_iters=40", "resume=auto", *common))

    def losses(run):
        return [(r["step"], r["train/loss"]) for r in read_metrics(tmp_path / run) if r["step"] > 20]

    assert losses("a") == losses("b")
    for (name, a), b in zip(
        straight.runtime.raw_model.state_dict().items(), resumed.runtime.raw_model.state_dict().values()
    ):
        assert torch.equal(a, b), name


def test_resume_auto_without_checkpoint_starts_fresh(tmp_path, corpus_file):
    trainer, _ = train(tmp_path, tiny_overrides(corpus_file, "max_iters=5", "eval_interval=5", "resume=auto"))
    assert trainer.state.step == 5


def test_fresh_run_refuses_a_directory_with_checkpoints(tmp_path, corpus_file):
    train(tmp_path, tiny_overrides(corpus_file, "max_iters=5", "eval_interval=5"))
    before = sorted(p.name for p in tmp_path.rglob("*"))
    with pytest.raises(ConfigError, match="resume=auto"):
        train(tmp_path, tiny_overrides(corpus_file, "max_iters=5", "eval_interval=5"))
    assert sorted(p.name for p in tmp_path.rglob("*")) == before


def test_resume_rejects_another_architecture(tmp_path, corpus_file):
    train(tmp_path / "a", tiny_overrides(corpus_file, "max_iters=5", "eval_interval=5"))
    checkpoint = tmp_path / "a" / "checkpoints" / "ckpt_0000005.pt"
    with pytest.raises(CheckpointError, match="n_layer: 2 -> 3"):
        train(tmp_path / "b", tiny_overrides(corpus_file, "max_iters=10", f"resume={checkpoint}", "model.n_layer=3"))
    assert not (tmp_path / "b").exists()


def test_corrupt_checkpoint_is_a_checkpoint_error(tmp_path):
    bad = tmp_path / "ckpt_0000001.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        load_checkpoint(bad)


def test_gradient_accumulation_backpropagates_every_micro_batch(tmp_path, corpus_file):
    """Two micro-batches of B give the gradient of their mean loss: each has its own data and backward."""
    overrides = tiny_overrides(corpus_file, "mode=language_model", "gradient_accumulation_steps=2", "optim.grad_clip=0")
    trainer = build_trainer(plan_job(compose_config(overrides), tmp_path), Console(file=io.StringIO()))
    reference = copy.deepcopy(trainer.runtime.raw_model)
    first, second = trainer.data.stream.get(0, 0), trainer.data.stream.get(0, 1)
    assert not torch.equal(first.inputs, second.inputs)
    trainer.train_step()
    trainer.data.stream.close()
    loss = sum(trainer.objective.loss(reference, batch) for batch in (first, second)) / 2
    loss.backward()
    for (name, expected), actual in zip(reference.named_parameters(), trainer.runtime.raw_model.parameters()):
        torch.testing.assert_close(actual.grad, expected.grad, rtol=1e-5, atol=1e-7, msg=name)


PER_SAMPLE_LOSS = (
    "loss.reduction=sample",
    "loss.weight_by_mask_ratio=true",
    "loss.label_smoothing=0.1",
    "loss.entropy_penalty.max=0.5",
)


@pytest.mark.parametrize("loss", [(), PER_SAMPLE_LOSS], ids=["plain", "per-sample modifiers"])
def test_accumulated_micro_batches_equal_one_big_batch(tmp_path, corpus_file, loss):
    """1 micro-batch of 2B rows and 2 micro-batches of B rows: the same loss and gradient on the same
    rows, though random masking gives the two halves different numbers of masked positions. With
    reduction=sample every modifier acts per sample, so that holds with all of them on."""
    cfg = compose_config(tiny_overrides(corpus_file, "masking=random", *loss))
    trainer = build_trainer(plan_job(cfg, tmp_path), Console(file=io.StringIO()))
    trainer.data.stream.close()
    trainer.state.step = 2  # mid-run: the entropy penalty's pi is above 0
    plan = [(0, trainer.curriculum.train[0], 16)]
    rows = masked_rows(trainer.data.train_windows, plan, trainer.files.vocab, torch.Generator().manual_seed(0))
    whole = UnmaskingObjective._assemble(rows)
    halves = [UnmaskingObjective._assemble(rows.rows(0, 8)), UnmaskingObjective._assemble(rows.rows(8, 16))]
    assert halves[0].num_targets != halves[1].num_targets

    def loss_and_gradient(batches):
        trainer.optimization.optimizer.zero_grad(set_to_none=True)
        trainer.data.step_batches = lambda step, stage, rollbacks: batches
        loss = trainer.train_step().loss
        return loss, torch.cat([p.grad.flatten() for p in trainer.runtime.raw_model.parameters() if p.grad is not None])

    (loss_a, grad_a), (loss_b, grad_b) = loss_and_gradient([whole]), loss_and_gradient(halves)
    assert torch.allclose(loss_a, loss_b, atol=1e-6)
    assert torch.allclose(grad_a, grad_b, atol=1e-6)


def test_resume_keeps_each_step_once_in_the_metrics(tmp_path, corpus_file):
    """A run killed after its step-8 records but before the step-8 checkpoint resumes from step 4:
    the records it wrote past step 4 are dropped, and the resume says what it did."""
    common = ("max_iters=8", "eval_interval=4", "log_interval=2")
    train(tmp_path, tiny_overrides(corpus_file, *common))
    (tmp_path / "checkpoints" / "ckpt_0000008.pt").unlink()
    with (tmp_path / "metrics.jsonl").open("a") as f:
        f.write('{"step": 9, "train/lo')  # torn by the kill
    _, printed = train(tmp_path, tiny_overrides(corpus_file, *common, "resume=auto"))
    assert f"resumed from {tmp_path / 'checkpoints' / 'ckpt_0000004.pt'} at step 4 (stage 0, best val" in printed
    records = read_metrics(tmp_path)
    logs = [r["step"] for r in records if "val/loss" not in r]
    evals = [r["step"] for r in records if "val/loss" in r]
    assert logs == [2, 4, 6, 8] and evals == [0, 4, 8]


def test_a_failed_checkpoint_write_keeps_the_earlier_ones(tmp_path, corpus_file, monkeypatch):
    """Disk full at the second checkpoint: one clear error naming the file, no temporary file left,
    the first checkpoint intact and loadable."""
    real_save, calls = checkpoint.torch.save, []

    def save_until_the_disk_is_full(payload, file):
        calls.append(file)
        if len(calls) == 2:
            file.write(b"partial")
            raise OSError(28, "No space left on device")
        real_save(payload, file)

    monkeypatch.setattr(checkpoint.torch, "save", save_until_the_disk_is_full)
    with pytest.raises(checkpoint.CheckpointWriteError) as err:
        train(tmp_path, tiny_overrides(corpus_file, "max_iters=8", "eval_interval=4"))
    assert (
        str(err.value)
        == f"cannot write checkpoint {tmp_path / 'checkpoints' / 'ckpt_0000008.pt'}: No space left on device"
    )
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == [
        "best.pt",
        "ckpt_0000004.pt",
        "lineage.json",
    ]
    assert load_checkpoint(tmp_path / "checkpoints" / "ckpt_0000004.pt")["state"]["step"] == 4


def test_resume_refuses_a_changed_config_unless_asked(tmp_path, corpus_file):
    train(tmp_path, tiny_overrides(corpus_file, "max_iters=4", "eval_interval=4"))
    with pytest.raises(ConfigError) as err:
        train(tmp_path, tiny_overrides(corpus_file, "max_iters=8", "resume=auto", "optim.lr=1e-3", "seed=7"))
    assert err.value.key == "resume" and "optim.lr: 0.003 -> 0.001" in str(err.value) and "seed: 1337 -> 7" in str(err)
    asked = ("resume_changes=[optim.lr]", "optim.lr=1e-3", "log_interval=2")
    trainer, printed = train(tmp_path, tiny_overrides(corpus_file, "max_iters=8", "resume=auto", *asked))
    assert trainer.state.step == 8 and trainer.cfg.optim.lr == 1e-3
    assert "resume: optim.lr changed 0.003 -> 0.001" in printed and "resume: log_interval changed 5 -> 2" in printed


def test_raising_max_iters_keeps_the_decay_horizon(tmp_path, corpus_file):
    """A run scheduled for 20 steps, resumed to 30: the rate stays at min_lr, no jump back up."""
    train(tmp_path, tiny_overrides(corpus_file, "max_iters=20", "eval_interval=10"))
    trainer, printed = train(tmp_path, tiny_overrides(corpus_file, "max_iters=30", "eval_interval=10", "resume=auto"))
    assert "decays until step 20" in printed
    lrs = [r["lr"] for r in read_metrics(tmp_path) if r["step"] > 20 and "lr" in r]
    assert lrs and all(lr == pytest.approx(trainer.cfg.optim.min_lr) for lr in lrs)


def test_resuming_an_earlier_checkpoint_starts_a_new_line(tmp_path, corpus_file):
    """Resume step 10 in a folder that also holds 20 and 30: the new line is 10 -> 20, and neither
    rotation nor resume=auto ever reaches the abandoned step 30."""
    common = ("eval_interval=10", "checkpoint.keep_last=5", "optim.lr_decay_iters=30")
    train(tmp_path, tiny_overrides(corpus_file, "max_iters=30", *common))
    folder = tmp_path / "checkpoints"
    abandoned = (folder / "ckpt_0000030.pt").read_bytes()
    train(tmp_path, tiny_overrides(corpus_file, "max_iters=20", f"resume={folder / 'ckpt_0000010.pt'}", *common))
    line = CheckpointDirectory(folder, keep_last=5)
    assert line.lineage() == [10, 20] and line.latest() == folder / "ckpt_0000020.pt"
    assert load_checkpoint(folder / "ckpt_0000020.pt")["state"]["step"] == 20
    assert (folder / "ckpt_0000030.pt").read_bytes() == abandoned  # left alone, but not in the line
    trainer, printed = train(tmp_path, tiny_overrides(corpus_file, "max_iters=20", "resume=auto", *common))
    assert f"resumed from {folder / 'ckpt_0000020.pt'}" in printed and trainer.state.step == 20
