"""The token_classification and sequence_scoring modes, and transfer from an unmasking run."""

import json

import pytest
import torch

from tests.conftest import assert_rejected, run_in_process, tiny_overrides, train
from trainer.errors import ConfigError
from trainer.reporting.callbacks import Callback


def records(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def evals(run_dir):
    return [r for r in records(run_dir) if "val/loss" in r]


def test_token_classification_beats_the_majority_baseline(tmp_path, corpus_file):
    train(
        tmp_path,
        tiny_overrides(
            corpus_file,
            "mode=token_classification",
            "mode.rate_warmup=200",
            "max_iters=100",
            "eval_interval=50",
            "optim.lr=5e-3",
        ),
    )
    first, last = evals(tmp_path)[0], evals(tmp_path)[-1]
    assert last["val/loss"] < 0.85 * first["val/loss"]
    assert last["val/f1"] > last["val/majority_baseline"]
    assert last["val/accuracy"] > last["val/majority_baseline"]
    assert 0.4 < last["val/replaced_fraction"] < 0.55  # the validation set covers the whole ramp evenly


def test_token_classification_with_model_replacements(tmp_path, corpus_file, unmasking_checkpoint):
    trainer, _ = train(
        tmp_path,
        tiny_overrides(
            corpus_file,
            "mode=token_classification",
            "mode.source=model",
            f"mode.unmasking_checkpoint={unmasking_checkpoint}",
            "mode.class_weights=true",
            "max_iters=30",
            "eval_interval=30",
        ),
    )
    batches = trainer.data.validation_set
    labels, selected = torch.cat([b.targets for b in batches]), torch.cat([b.mask for b in batches])
    assert not (labels.bool() & ~selected).any()  # only selected positions can be replaced
    # the unmasking model often restores the original character: those positions stay label 0
    assert 0 < labels.sum() < selected.sum()
    assert not any((b.inputs == trainer.files.vocab.mask_id).any() for b in batches)  # every mask was filled
    assert all(torch.isfinite(torch.tensor(r["val/loss"])) for r in evals(tmp_path))


def test_scorer_from_an_unmasking_run_beats_the_mean_baseline(tmp_path, corpus_file, unmasking_checkpoint):
    train(
        tmp_path,
        tiny_overrides(
            corpus_file,
            "mode=sequence_scoring",
            f"mode.unmasking_checkpoint={unmasking_checkpoint}",
            "transfer=two_stage",
            f"transfer.checkpoint={unmasking_checkpoint}",
            "transfer.unfreeze_at_iteration=40",
            "transfer.unfreeze_lr_multiplier=0.5",
            "masking=random",
            "masking.max_masked_ratio=0.9",
            "max_iters=120",
            "eval_interval=60",
        ),
    )
    first, last = evals(tmp_path)[0], evals(tmp_path)[-1]
    assert last["val/loss"] < first["val/loss"]
    assert last["val/loss"] < last["val/baseline_mse"]
    assert last["val/pearson"] > 0.3
    assert {"val/mae", "val/baseline_mse", "val/pearson"} <= set(last)


class TrunkWatch(Callback):
    def __init__(self):
        self.trunk, self.head_steps, self.lrs = {}, {}, {}

    def on_step_end(self, trainer, metrics):
        model, step = trainer.runtime.raw_model, trainer.state.step
        self.trunk[step] = [p.detach().clone() for p in model.trunk_parameters()]
        head = model.head_parameters()[0]
        self.head_steps[step] = int(trainer.optimization.optimizer.state[head]["step"])
        self.lrs[step] = {g["name"]: g["lr"] for g in trainer.optimization.optimizer.param_groups}


def two_stage_run(run_dir, corpus_file, checkpoint, *extra):
    import io

    from rich.console import Console

    from tests.conftest import compose_config
    from trainer.build import build_trainer
    from trainer.plan import plan_job

    overrides = tiny_overrides(
        corpus_file,
        "mode=sequence_scoring",
        f"mode.unmasking_checkpoint={checkpoint}",
        "transfer=two_stage",
        f"transfer.checkpoint={checkpoint}",
        "transfer.unfreeze_at_iteration=6",
        "transfer.unfreeze_lr_multiplier=0.1",
        "eval_interval=5",
        "optim.lr_decay_iters=20",
        *extra,
    )
    out = io.StringIO()
    trainer = build_trainer(plan_job(compose_config(overrides), run_dir), Console(file=out, width=200))
    watch = TrunkWatch()
    trainer.callbacks.add_callback(watch)
    trainer.fit()
    return trainer, watch, out.getvalue()


def test_two_stage_freezes_then_unfreezes_keeping_the_head_state(tmp_path, corpus_file, unmasking_checkpoint):
    trainer, watch, printed = two_stage_run(tmp_path, corpus_file, unmasking_checkpoint, "max_iters=10")
    frozen = [watch.trunk[s] for s in range(1, 7)]
    assert all(torch.equal(a, b) for step in frozen[1:] for a, b in zip(frozen[0], step))
    assert not all(torch.equal(a, b) for a, b in zip(watch.trunk[6], watch.trunk[7]))
    # the head's Adam state carries on through unfreezing instead of starting again
    assert [watch.head_steps[s] for s in (6, 7, 8)] == [6, 7, 8]
    for step in (7, 8, 10):
        lrs = watch.lrs[step]
        assert lrs["trunk_decay"] == pytest.approx(0.1 * lrs["decay"]) and lrs["trunk_no_decay"] == lrs["trunk_decay"]
    assert "unfroze the trunk at step 6" in printed and "frozen (0.0%)" in printed
    assert [r for r in records(tmp_path) if r.get("event") == "unfreeze"][0]["step"] == 6


def test_resume_past_the_unfreeze_point(tmp_path, corpus_file, unmasking_checkpoint):
    straight, _, _ = two_stage_run(tmp_path / "a", corpus_file, unmasking_checkpoint, "max_iters=20")
    two_stage_run(tmp_path / "b", corpus_file, unmasking_checkpoint, "max_iters=10")
    resumed, _, _ = two_stage_run(tmp_path / "b", corpus_file, unmasking_checkpoint, "max_iters=20", "resume=auto")
    assert resumed.optimization.unfrozen and len(resumed.optimization.optimizer.param_groups) == 4

    def after(run):
        return [(r["step"], r["train/loss"]) for r in records(tmp_path / run) if r["step"] > 10 and "train/loss" in r]

    assert after("a") == after("b")
    for a, b in zip(straight.runtime.raw_model.parameters(), resumed.runtime.raw_model.parameters()):
        assert torch.equal(a, b)


def test_feature_extraction_trains_only_the_head(tmp_path, corpus_file, unmasking_checkpoint):
    trainer, printed = train(
        tmp_path,
        tiny_overrides(
            corpus_file,
            "mode=token_classification",
            "transfer=feature_extraction",
            f"transfer.checkpoint={unmasking_checkpoint}",
            "max_iters=5",
            "eval_interval=5",
        ),
    )
    assert f"transfer: the trunk of {unmasking_checkpoint} (step " in printed and "unmasking training)" in printed
    source = torch.load(unmasking_checkpoint, weights_only=True)["model"]
    state = trainer.runtime.raw_model.state_dict()
    cls_id = trainer.files.vocab.cls_id
    for key, value in state.items():
        if key.startswith("transformer.") and key != "transformer.wte.weight":
            assert torch.equal(value, source[key]), key
    wte = state["transformer.wte.weight"]
    assert torch.equal(
        torch.cat([wte[:cls_id], wte[cls_id + 1 :]]),
        torch.cat([source["transformer.wte.weight"][:cls_id], source["transformer.wte.weight"][cls_id + 1 :]]),
    )
    assert wte[cls_id].abs().max() < 0.01  # the [CLS] row was re-initialised small
    assert "trainable" in printed and "frozen (" in printed


def test_sequence_scoring_without_its_unmasking_checkpoint(tmp_path, corpus_file, monkeypatch, capsys):
    result = run_in_process(
        monkeypatch,
        capsys,
        tmp_path,
        *tiny_overrides(corpus_file),
        "mode=sequence_scoring",
        f"hydra.run.dir={tmp_path / 'run'}",
    )
    assert_rejected(result, "mode.unmasking_checkpoint", "missing")
    result = run_in_process(
        monkeypatch,
        capsys,
        tmp_path,
        *tiny_overrides(corpus_file),
        "mode=sequence_scoring",
        "mode.unmasking_checkpoint=/no/such.pt",
        f"hydra.run.dir={tmp_path / 'run'}",
    )
    assert_rejected(result, "mode.unmasking_checkpoint", "does not exist")
    assert not (tmp_path / "run").exists()


def test_mismatched_transfer_checkpoint(tmp_path, corpus_file, unmasking_checkpoint, monkeypatch, capsys):
    result = run_in_process(
        monkeypatch,
        capsys,
        tmp_path,
        *tiny_overrides(corpus_file, "mode=token_classification"),
        "transfer=fine_tuning",
        f"transfer.checkpoint={unmasking_checkpoint}",
        "model.n_embd=32",
        f"hydra.run.dir={tmp_path / 'run'}",
    )
    assert_rejected(result, "transfer.checkpoint", "n_embd: 64 -> 32")
    assert not (tmp_path / "run").exists()


def test_a_scorer_checkpoint_is_no_unmasking_model(tmp_path, corpus_file, unmasking_checkpoint, monkeypatch, capsys):
    run_dir = tmp_path / "scorer"
    train(
        run_dir,
        tiny_overrides(
            corpus_file,
            "mode=sequence_scoring",
            f"mode.unmasking_checkpoint={unmasking_checkpoint}",
            "max_iters=2",
            "eval_interval=2",
        ),
    )
    result = run_in_process(
        monkeypatch,
        capsys,
        tmp_path,
        *tiny_overrides(corpus_file),
        "mode=sequence_scoring",
        f"mode.unmasking_checkpoint={run_dir / 'checkpoints' / 'ckpt_0000002.pt'}",
        f"hydra.run.dir={tmp_path / 'run'}",
    )
    assert_rejected(result, "mode.unmasking_checkpoint", "sequence_scoring training")


def test_random_replacements_need_no_unmasking_model(tmp_path, corpus_file):
    overrides = tiny_overrides(corpus_file, "mode=token_classification", "mode.source=random", "max_iters=2")
    trainer, _ = train(tmp_path, overrides)
    assert trainer.objective.filler is None and trainer.state.step == 2
    with pytest.raises(ConfigError, match="not read with source=random"):  # it would be silently ignored
        train(tmp_path / "b", [*overrides, "mode.unmasking_checkpoint=/not/needed.pt"])
