"""The loss modifiers (SPEC section 7) against values computed by hand, and in training."""

import json
import math

import pytest
import torch
import torch.nn.functional as F

from tests.conftest import tiny_overrides, train
from trainer.loss import EntropyPenaltyConfig, LossConfig, Predictions, Reduction, plain_loss, wrong_answer_entropy

# 3 positions of 2 samples, 5 classes: ids 0-2 are base classes, 3 and 4 special (mask, reserved)
LOGITS = torch.tensor(
    [
        [2.0, 0.5, -1.0, 1.5, 0.3],
        [0.1, 1.2, 0.4, -0.7, 2.2],
        [-0.3, 0.0, 1.7, 0.9, -1.1],
    ]
)
TARGETS = torch.tensor([0, 2, 1])
ROW = torch.tensor([0, 0, 1])
BASE = 3


def predictions(**kwargs) -> Predictions:
    return Predictions(LOGITS.clone().requires_grad_(), TARGETS, rows=2, row=ROW, **kwargs)


def by_hand_entropy(logits: torch.Tensor, target: int) -> float:
    """Entropy of the renormalised wrong-answer distribution over the base ids, term by term."""
    p = logits.softmax(-1).tolist()
    wrong = [p[i] for i in range(BASE) if i != target]
    total = sum(wrong)
    return -sum(w / total * math.log(w / total) for w in wrong)


def test_label_smoothing_spreads_over_the_other_base_ids_only():
    u = 0.1
    loss = LossConfig(label_smoothing=u).build(BASE)(predictions()).loss
    log_p = LOGITS.log_softmax(-1)
    soft = torch.zeros_like(LOGITS)
    for n, target in enumerate(TARGETS.tolist()):
        soft[n, :BASE] = u / (BASE - 1)  # the special ids 3 and 4 keep 0
        soft[n, target] = 1 - u
    assert torch.allclose(soft.sum(1), torch.ones(3))
    expected = -(soft * log_p).sum(1).mean()
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
    assert loss.item() != pytest.approx(plain_loss(predictions()).item(), rel=1e-3)


def test_wrong_answer_entropy_by_hand_and_hmax_over_the_base_ids():
    entropy = wrong_answer_entropy(LOGITS.log_softmax(-1), TARGETS, BASE)
    expected = [by_hand_entropy(LOGITS[n], t) for n, t in enumerate(TARGETS.tolist())]
    assert entropy.tolist() == pytest.approx(expected, rel=1e-5)
    assert all(0 <= h <= math.log(BASE - 1) + 1e-6 for h in entropy.tolist())
    assert LossConfig().build(BASE).max_entropy == pytest.approx(math.log(2))


def test_the_entropy_multiplier_by_hand():
    pi = 0.4
    out = LossConfig(entropy_penalty=EntropyPenaltyConfig(max=0.5)).build(BASE)(predictions(), pi)
    h = sum(by_hand_entropy(LOGITS[n], t) for n, t in enumerate(TARGETS.tolist())) / 3
    h_max = math.log(BASE - 1)
    multiplier = 1 + pi * (h_max - h) / h_max
    assert out.multiplier.item() == pytest.approx(multiplier, rel=1e-5)
    assert out.wrong_entropy.item() == pytest.approx(h, rel=1e-5)
    plain = F.cross_entropy(LOGITS, TARGETS).item()
    assert out.loss.item() == pytest.approx(plain * multiplier, rel=1e-5)


def test_the_gradient_flows_through_the_entropy():
    loss_fn = LossConfig(entropy_penalty=EntropyPenaltyConfig(max=0.5)).build(BASE)
    through = predictions()
    loss_fn(through, 0.5).loss.backward()
    detached = predictions()
    out = loss_fn(detached, 0.5)
    (F.cross_entropy(detached.logits, TARGETS) * out.multiplier).backward()
    assert not torch.allclose(through.logits.grad, detached.logits.grad, atol=1e-4)


def test_the_entropy_gradient_stays_finite_when_probabilities_underflow():
    logits = torch.tensor([[80.0, -80.0, -80.0, 0.0, 0.0], [0.0, 0.0, 90.0, 0.0, 0.0]], requires_grad=True)
    p = Predictions(logits, torch.tensor([0, 2]), rows=2)
    LossConfig(label_smoothing=0.1, entropy_penalty=EntropyPenaltyConfig(max=1.0)).build(BASE)(p, 1.0).loss.backward()
    assert torch.isfinite(logits.grad).all()


def test_the_penalty_ramps_from_start_iter_to_max_at_max_iters():
    ramp = EntropyPenaltyConfig(max=0.5, start_iter=100)
    assert [ramp.strength(s, 300) for s in (0, 99, 100, 200, 300, 400)] == [0, 0, 0, 0.25, 0.5, 0.5]
    assert EntropyPenaltyConfig(max=0.0).strength(500, 300) == 0


def test_mask_ratio_weighting_per_micro_batch_and_per_sample():
    ratio = torch.tensor([0.25, 0.04])
    token = LossConfig(weight_by_mask_ratio=True).build(BASE)(predictions(mask_ratio=ratio)).loss
    plain = F.cross_entropy(LOGITS, TARGETS).item()
    assert token.item() == pytest.approx(plain * math.sqrt(1 / 0.145), rel=1e-6)

    nll = F.cross_entropy(LOGITS, TARGETS, reduction="none").tolist()
    cfg = LossConfig(weight_by_mask_ratio=True, reduction=Reduction.sample)
    sample = cfg.build(BASE)(predictions(mask_ratio=ratio)).loss
    expected = ((nll[0] + nll[1]) / 2 * math.sqrt(1 / 0.25) + nll[2] * math.sqrt(1 / 0.04)) / 2
    assert sample.item() == pytest.approx(expected, rel=1e-6)


def test_sample_reduction_skips_samples_without_targets_and_applies_their_weight():
    nll = F.cross_entropy(LOGITS, TARGETS, reduction="none").tolist()
    p = Predictions(LOGITS, TARGETS, rows=3, row=torch.tensor([0, 0, 2]), sample_weight=torch.tensor([2.0, 7.0, 0.5]))
    loss = LossConfig(reduction=Reduction.sample).build(BASE)(p).loss
    # sample 1 has no target: the mean is over samples 0 and 2
    assert loss.item() == pytest.approx(((nll[0] + nll[1]) / 2 * 2.0 + nll[2] * 0.5) / 2, rel=1e-6)


def test_with_two_classes_the_wrong_answer_is_always_uniform():
    """Token classification (original, replaced): one wrong class, so H = Hmax = 0 and no penalty."""
    logits = torch.randn(6, 2, generator=torch.Generator().manual_seed(0))
    p = Predictions(logits, torch.tensor([0, 1, 1, 0, 0, 1]), rows=2)
    out = LossConfig(label_smoothing=0.2, entropy_penalty=EntropyPenaltyConfig(max=1.0)).build(2)(p, 1.0)
    assert out.multiplier.item() == 1.0 and out.wrong_entropy.item() == pytest.approx(0.0, abs=1e-6)
    soft = torch.full((6, 2), 0.2).scatter(1, p.targets[:, None], 0.8)
    assert out.loss.item() == pytest.approx(-(soft * logits.log_softmax(-1)).sum(1).mean().item(), rel=1e-6)


PENALTY = ("loss.entropy_penalty.max=0.5", "loss.entropy_penalty.start_iter=5")
MODES = {
    "unmasking": ("mode=unmasking", *PENALTY),
    # one corruption rate for training and validation, so the val loss measures what is trained; with
    # two classes the entropy penalty means nothing (refused)
    "token_classification": ("mode=token_classification", "mode.rate_min=0.3", "mode.rate_max=0.3"),
}


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("reduction", ["token", "sample"])
def test_a_run_with_every_modifier_learns(tmp_path, corpus_file, mode, reduction):
    """Every modifier the mode takes, together."""
    modifiers = ("loss.label_smoothing=0.1", "loss.weight_by_mask_ratio=true", f"loss.reduction={reduction}")
    args = tiny_overrides(corpus_file, *MODES[mode], *modifiers)
    train(tmp_path, [*args, "max_iters=40", "eval_interval=20", "optim.lr=5e-3"])
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    val = [r["val/loss"] for r in records if "val/loss" in r]
    assert val[-1] < val[0] - 0.05
    logged = [r for r in records if "loss/entropy_multiplier" in r]
    assert bool(logged) == (mode == "unmasking") and all(math.isfinite(r["loss/wrong_entropy"]) for r in logged)


def test_the_multiplier_ema_resumes_bit_exactly(tmp_path, corpus_file):
    args = tiny_overrides(corpus_file, "loss.entropy_penalty.max=2.0", "max_iters=8", "eval_interval=4")
    straight, _ = train(tmp_path / "a", args)
    assert straight.objective.state_dict()["entropy_multiplier_ema"] != 1.0
    resumed, _ = train(tmp_path / "b", [*args, f"resume={tmp_path / 'a' / 'checkpoints' / 'ckpt_0000004.pt'}"])
    assert resumed.objective.state_dict() == straight.objective.state_dict()
    final = [
        torch.load(p / "checkpoints" / "ckpt_0000008.pt", weights_only=True) for p in (tmp_path / "a", tmp_path / "b")
    ]
    assert final[0]["state"]["entropy_multiplier_ema"] == final[1]["state"]["entropy_multiplier_ema"]


def test_raising_max_iters_on_resume_keeps_the_ramp(tmp_path, corpus_file):
    args = tiny_overrides(corpus_file, "loss.entropy_penalty.max=0.8", "max_iters=8", "eval_interval=4")
    train(tmp_path, args)
    resumed, printed = train(tmp_path, [*args, "max_iters=16", "resume=auto"])
    assert "the entropy penalty reaches its max at step 8" in printed
    assert resumed.cfg.loss.entropy_penalty.strength(8, resumed.cfg.max_iters) == pytest.approx(0.8)
