"""The exponential moving average of the weights (optim.ema_decay)."""

import json

import pytest
import torch

from tests.conftest import compose_config, tiny_overrides, train
from trainer.contract import check
from trainer.ema import WeightAverage
from trainer.errors import ConfigError
from trainer.loop import Trainer


def test_the_average_is_the_hand_computed_one_over_three_steps():
    model = torch.nn.Linear(2, 1, bias=False)
    ema = WeightAverage(model, decay=0.5, start=1)
    values, expected = [1.0, 3.0, 5.0], None
    for value in values:
        with torch.no_grad():
            model.weight.fill_(value)
        ema.update()
        expected = value if expected is None else 0.5 * expected + 0.5 * value  # step 1 copies (start=1)
    assert torch.allclose(ema.weights[0], torch.full((1, 2), expected)) and expected == 3.5
    with ema.applied():
        assert torch.equal(model.weight, torch.full((1, 2), 3.5))
    assert torch.equal(model.weight, torch.full((1, 2), 5.0))  # its own weights again


def test_the_average_is_off_by_default_and_a_decay_of_one_is_refused(corpus_file):
    assert check(compose_config(tiny_overrides(corpus_file))).optim.ema_decay == 0
    with pytest.raises(ConfigError, match="optim.ema_decay"):
        check(compose_config(tiny_overrides(corpus_file, "optim.ema_decay=1")))


def test_an_averaged_run_logs_both_losses_and_resumes_bit_exactly(tmp_path, corpus_file):
    args = tiny_overrides(corpus_file, "optim.ema_decay=0.9", "max_iters=8", "eval_interval=4")
    straight, _ = train(tmp_path / "a", args)
    resumed, _ = train(tmp_path / "b", [*args, f"resume={tmp_path / 'a' / 'checkpoints' / 'ckpt_0000004.pt'}"])
    final = [
        torch.load(p / "checkpoints" / "ckpt_0000008.pt", weights_only=True)["ema"]
        for p in (tmp_path / "a", tmp_path / "b")
    ]
    assert final[0]["updates"] == final[1]["updates"] == 8
    assert all(torch.equal(final[0]["weights"][k], final[1]["weights"][k]) for k in final[0]["weights"])
    record = [json.loads(line) for line in (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()][-1]
    assert record["val/loss"] != record["val/loss_raw"]


def test_a_rollback_restores_the_average_of_the_good_state(tmp_path, corpus_file, monkeypatch):
    restored = []
    load = Trainer.load_payload

    def recording(self, payload):
        load(self, payload)
        restored.append((payload["state"]["step"], self.optimization.ema.state_dict()))

    monkeypatch.setattr(Trainer, "load_payload", recording)
    inject = "stability.inject=[{step: 7, target: params}]"
    args = tiny_overrides(
        corpus_file, "optim.ema_decay=0.9", "max_iters=10", "eval_interval=5", inject,
        "stability.checks=[loss,grad_norm,params,val]",
    )  # fmt: skip
    trainer, _ = train(tmp_path, args)
    assert trainer.guard.rollbacks == 1 and restored[0][0] == 5
    saved = torch.load(tmp_path / "checkpoints" / "ckpt_0000005.pt", weights_only=True)["ema"]
    assert restored[0][1]["updates"] == saved["updates"] == 5
    assert all(torch.equal(restored[0][1]["weights"][k], saved["weights"][k]) for k in saved["weights"])


def test_the_evaluate_command_uses_the_averaged_weights_unless_told_not_to(tmp_path, corpus_file, monkeypatch, capsys):
    from tests.test_evaluate import evaluate_command

    args = tiny_overrides(corpus_file, "mode=language_model", "optim.ema_decay=0.9", "data.test_fraction=0.05")
    train(tmp_path / "run", args)
    for ema in ("true", "false"):
        code, _, err = evaluate_command(monkeypatch, capsys, tmp_path, f"checkpoint={tmp_path / 'run'}", f"ema={ema}")
        assert code == 0, err
    averaged, trained = [json.loads(line) for line in (tmp_path / "run" / "evaluations.jsonl").read_text().splitlines()]
    assert (averaged["weights"], trained["weights"]) == ("averaged", "trained")
    assert averaged["nats_per_token"] != trained["nats_per_token"]


def test_a_tied_output_head_is_averaged_with_the_embedding_when_loaded(tmp_path, corpus_file):
    from trainer.checkpoint import load_model

    args = tiny_overrides(corpus_file, "mode=language_model", "optim.ema_decay=0.5", "max_iters=4")
    train(tmp_path, args)
    path = tmp_path / "checkpoints" / "ckpt_0000004.pt"
    model, payload = load_model(path, "checkpoint", ("language_model",), "", averaged=True)
    averaged = payload["ema"]["weights"]
    assert torch.equal(model.lm_head.weight, averaged["transformer.wte.weight"])  # one tensor, the average
    assert all(torch.equal(p, averaged[n]) for n, p in model.named_parameters())
    assert not torch.equal(model.lm_head.weight, payload["model"]["lm_head.weight"])
