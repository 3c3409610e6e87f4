"""Instability checks, the recovery policy and fault injection, end to end and in isolation."""

import json
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import torch

from stability import Action, RecoveryPolicy, TrainingDiverged
from tests.conftest import compose_config, tiny_overrides, train
from trainer.build import build_trainer
from trainer.plan import plan_job
from trainer.reporting.callbacks import Callback

ROOT = Path(__file__).resolve().parent.parent
PROJECT_CODE = tuple(str(ROOT / package) + "/" for package in ("trainer", "models", "masking", "stability"))


def records(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


class WeightsAfterEachStep(Callback):
    def __init__(self):
        self.weights = {}

    def on_step_end(self, trainer, metrics):
        self.weights[trainer.state.step] = [p.detach().clone() for p in trainer.runtime.raw_model.parameters()]


def run_with_recorder(run_dir, overrides):
    import io

    from rich.console import Console

    trainer = build_trainer(plan_job(compose_config(overrides), run_dir), Console(file=io.StringIO(), width=200))
    recorder = WeightsAfterEachStep()
    trainer.callbacks.add_callback(recorder)
    trainer.fit()
    return trainer, recorder.weights


@pytest.mark.parametrize("target", ["logits", "loss", "grads"])
@pytest.mark.parametrize("kind", ["nan", "inf"])
def test_a_bad_step_is_skipped_before_it_reaches_the_weights(tmp_path, corpus_file, target, kind):
    inject = f"stability.inject=[{{step: 6, target: {target}, kind: {kind}}}]"
    trainer, weights = run_with_recorder(
        tmp_path, tiny_overrides(corpus_file, "max_iters=10", "eval_interval=5", inject)
    )
    # step 6 ran but changed nothing: the weights after it equal the weights before it
    assert all(torch.equal(a, b) for a, b in zip(weights[6], weights[7]))
    assert not all(torch.equal(a, b) for a, b in zip(weights[7], weights[8]))
    events = [r for r in records(tmp_path) if "stability/event" in r]
    assert len(events) == 1 and events[0]["step"] == 6 and events[0]["action"] == "skip"
    # the check closest to the fault fires first (a NaN also spreads to the later ones)
    assert events[0]["check"].split(",")[0] == {"logits": "logits", "loss": "loss", "grads": "grad_norm"}[target]
    final = records(tmp_path)[-1]
    assert final["step"] == 10 and torch.isfinite(torch.tensor(final["val/loss"]))
    assert all(torch.isfinite(p).all() for p in trainer.runtime.raw_model.parameters())


def test_corrupted_weights_roll_back_at_once_with_the_params_check(tmp_path, corpus_file):
    inject = "stability.inject=[{step: 7, target: params}]"
    trainer, _ = run_with_recorder(
        tmp_path,
        tiny_overrides(
            corpus_file, "max_iters=12", "eval_interval=5", inject, "stability.checks=[loss,grad_norm,params,val]"
        ),
    )
    events = [r for r in records(tmp_path) if "stability/event" in r]
    assert events[0]["check"] == "loss,grad_norm,params" and events[0]["action"] == "rollback"
    assert trainer.guard.rollbacks == 1 and trainer.state.step == 12
    assert all(torch.isfinite(p).all() for p in trainer.runtime.raw_model.parameters())


def test_repeated_faults_roll_back_with_a_lower_learning_rate(tmp_path, corpus_file):
    inject = "stability.inject=[{step: 7, target: loss, repeat: 2}]"
    trainer, _ = train(
        tmp_path,
        tiny_overrides(
            corpus_file,
            "max_iters=12",
            "eval_interval=5",
            "stability.max_skips=2",
            "stability.lr_backoff=0.25",
            "optim.warmup_iters=0",
            "optim.schedule=constant",
            inject,
        ),
    )
    events = [r for r in records(tmp_path) if "stability/event" in r]
    assert [(e["step"], e["action"]) for e in events] == [(7, "skip"), (8, "rollback"), (5, "rollback")]
    assert events[-1]["lr"] == pytest.approx(3e-3 * 0.25)
    assert trainer.guard.lr_scale == 0.25 and trainer.guard.rollbacks == 1 and trainer.state.step == 12
    logs = [r for r in records(tmp_path) if "ms_per_step" in r and r["step"] > 5]
    assert all(r["lr"] == pytest.approx(3e-3 * 0.25) for r in logs)


def test_a_non_finite_validation_loss_rolls_back(tmp_path, corpus_file):
    trainer, _ = train(
        tmp_path,
        tiny_overrides(corpus_file, "max_iters=15", "eval_interval=5", "stability.inject=[{step: 10, target: val}]"),
    )
    events = [r for r in records(tmp_path) if "stability/event" in r]
    assert events[0]["check"] == "val" and events[0]["action"] == "rollback" and events[0]["step"] == 10
    assert events[1]["step"] == 5  # back at the checkpoint of step 5
    assert sorted(p.name for p in (tmp_path / "checkpoints").glob("ckpt_*")) == ["ckpt_0000010.pt", "ckpt_0000015.pt"]
    assert trainer.state.step == 15 and trainer.guard.rollbacks == 1


def test_an_early_divergence_rolls_back_to_the_in_memory_start(tmp_path, corpus_file):
    trainer, printed = train(
        tmp_path,
        tiny_overrides(
            corpus_file,
            "max_iters=6",
            "eval_interval=5",
            "stability.max_skips=1",
            "stability.inject=[{step: 2, target: grads}]",
        ),
    )
    assert "in-memory state of step 0" in printed
    assert trainer.guard.rollbacks == 1 and trainer.state.step == 6


def test_policy_raise_stops_at_once(tmp_path, corpus_file):
    with pytest.raises(TrainingDiverged, match="not finite at step 3 .stability.policy=raise"):
        train(
            tmp_path,
            tiny_overrides(
                corpus_file, "max_iters=10", "stability=strict", "stability.inject=[{step: 3, target: loss}]"
            ),
        )


def test_past_max_rollbacks_the_process_exits_with_its_own_code(tmp_path, corpus_file):
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "trainer",
            *tiny_overrides(corpus_file),
            "max_iters=30",
            "eval_interval=5",
            "stability.max_skips=1",
            "stability.max_rollbacks=2",
            "stability.inject=[{step: 6, target: loss, repeat: 50}]",
            f"hydra.run.dir={tmp_path}",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 3
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "training diverged" in lines[0] and "after 2 rollbacks" in lines[0]
    assert [r["action"] for r in records(tmp_path) if "stability/event" in r and "check" in r][-1] == "abort"


def test_stability_state_survives_resume(tmp_path, corpus_file):
    common = (
        "eval_interval=5",
        "stability.max_skips=2",
        "optim.lr_decay_iters=20",
        "stability.inject=[{step: 7, target: loss, repeat: 2}]",
    )
    straight, _ = train(tmp_path / "a", tiny_overrides(corpus_file, "max_iters=20", *common))
    train(tmp_path / "b", tiny_overrides(corpus_file, "max_iters=10", *common))
    resumed, _ = train(tmp_path / "b", tiny_overrides(corpus_file, "max_iters=20", "resume=auto", *common))
    assert (resumed.guard.rollbacks, resumed.guard.lr_scale) == (1, 0.5)

    def after(run):
        return [(r["step"], r["train/loss"]) for r in records(tmp_path / run) if r["step"] > 10 and "train/loss" in r]

    assert after("a") == after("b")


def test_policy_escalates_within_the_window():
    policy = RecoveryPolicy(max_skips=3, window=10, max_rollbacks=1)
    assert policy.decide(5, ("loss",), [], 0) is Action.SKIP
    assert policy.decide(9, ("loss",), [5], 0) is Action.SKIP
    assert policy.decide(12, ("loss",), [5, 9], 0) is Action.ROLLBACK
    assert policy.decide(30, ("loss",), [5, 9], 0) is Action.SKIP  # the old ones left the window
    assert policy.decide(30, ("val",), [], 0) is Action.ROLLBACK
    assert policy.decide(30, ("val",), [], 1) is Action.ABORT
    assert RecoveryPolicy(policy="raise").decide(0, ("loss",), [], 0) is Action.ABORT


class SyncCounter:
    """Counts host reads of tensors made by the project's own code on the training thread."""

    METHODS = ("item", "tolist", "__bool__", "__float__", "__int__")

    def __init__(self, monkeypatch):
        self.count = 0
        for name in self.METHODS:
            original = getattr(torch.Tensor, name)
            monkeypatch.setattr(torch.Tensor, name, self._wrap(original))

    def _wrap(self, original):
        counter = self

        def counted(tensor, *args, **kwargs):
            caller = sys._getframe(1).f_code.co_filename
            if threading.current_thread() is threading.main_thread() and caller.startswith(PROJECT_CODE):
                counter.count += 1
            return original(tensor, *args, **kwargs)

        return counted


class SyncsPerStep(Callback):
    def __init__(self, counter):
        self.counter, self.at = counter, {}

    def on_step_end(self, trainer, metrics):
        self.at[trainer.state.step] = self.counter.count


@pytest.mark.parametrize("stability,expected", [("default", 1), ("strict", 1), ("off", 0)])
def test_a_step_reads_at_most_one_flag(tmp_path, corpus_file, monkeypatch, stability, expected):
    import io

    from rich.console import Console

    overrides = tiny_overrides(
        corpus_file,
        f"stability={stability}",
        "max_iters=12",
        "eval_interval=100",
        "log_interval=100",
        "gradient_accumulation_steps=2",
        "mode=unmasking",
    )
    trainer = build_trainer(plan_job(compose_config(overrides), tmp_path), Console(file=io.StringIO()))
    counter = SyncCounter(monkeypatch)
    per_step = SyncsPerStep(counter)
    trainer.callbacks.add_callback(per_step)
    trainer.fit()
    between = [per_step.at[s + 1] - per_step.at[s] for s in range(1, 11)]  # steps with no eval and no log
    assert between == [expected] * 10


def test_a_bad_val_loss_at_step_0_rolls_back_to_the_initial_state(tmp_path, corpus_file):
    """Nothing was checkpointed yet: the rollback returns to the in-memory state of step 0."""
    faults = "stability.inject=[{step: 0, target: val, kind: nan}]"
    trainer, printed = train(tmp_path, tiny_overrides(corpus_file, faults, "max_iters=4", "eval_interval=2"))
    assert trainer.state.step == 4 and trainer.guard.rollbacks == 1
    assert "rolled back to the in-memory state of step 0" in printed
