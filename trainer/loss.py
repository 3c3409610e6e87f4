"""The `loss` config group: the modifiers of a classification training loss (SPEC section 7).

The objectives whose model predicts a class per position (language model, unmasking, token
classification) hand their logits to `ClassificationLoss`, which applies

* label smoothing u: 1 - u on the correct class, u spread evenly over the other *base* classes
  (the special and reserved ids of the vocabulary get no mass);
* the wrong-answer entropy penalty: H is the entropy of the model's distribution over the wrong base
  classes (softmax without the correct class, renormalised), Hmax = ln(number of wrong base
  classes); the loss is multiplied by 1 + pi * (Hmax - H) / Hmax, H differentiable, so the
  gradient also pushes the wrong answers' mass towards uniform. pi ramps linearly from 0 at
  `start_iter` to `max` at `max_iters`;
* mask-ratio weighting: the loss is multiplied by sqrt(1 / rho), rho the masked fraction;
* the reduction: the mean over every target of the micro-batch (`token`), or the mean of per-sample
  means over the samples with at least one target (`sample`); with `sample`, the mask ratio, the
  entropy multiplier and an optional per-sample weight apply per sample.

These modify training only: evaluation scores the plain cross-entropy (`plain_loss`), so val/loss
stays comparable between runs. Everything is computed in float32 and without a host sync.
"""

import math
from dataclasses import dataclass, field
from enum import Enum
from typing import Annotated, ClassVar

import torch
import torch.nn.functional as F
from annotated_types import Ge, Interval

from trainer.errors import ConfigError
from trainer.knobs import horizon

ENTROPY_EMA_DECAY = 0.99  # the logged multiplier is an EMA over the good steps, kept in checkpoints


class Reduction(str, Enum):
    token = "token"  # the mean over every target of the micro-batch
    sample = "sample"  # the mean of per-sample means, over the samples with at least one target


@dataclass
class EntropyPenaltyConfig:
    max: Annotated[float, Ge(0)] = 0.0  # pi reached at the end of the ramp; 0 turns the penalty off
    start_iter: Annotated[int, Ge(0)] = 0  # pi ramps linearly from 0 at this step ...
    # ... to `max` at this one (null: max_iters of the run that started: a resume keeps the horizon)
    end_iter: Annotated[int, Ge(1)] | None = field(
        default=None, metadata=horizon("the entropy penalty reaches its max at step {}", off_when_zero="max")
    )

    def __post_init__(self):
        if self.max == 0:
            for key, unused in (("start_iter", self.start_iter != 0), ("end_iter", self.end_iter is not None)):
                if unused:
                    raise ConfigError(
                        f"loss.entropy_penalty.{key}",
                        "has no effect while loss.entropy_penalty.max=0 (the penalty is off)",
                        f"loss.entropy_penalty.max > 0, or the default {key}",
                    )
        elif self.end_iter is not None and self.end_iter <= self.start_iter:
            raise ConfigError(
                "loss.entropy_penalty.end_iter",
                f"{self.end_iter} is not after loss.entropy_penalty.start_iter={self.start_iter}",
                f"an integer > {self.start_iter}, or null for max_iters",
            )

    def end(self, max_iters: int) -> int:
        return self.end_iter if self.end_iter is not None else max_iters

    def strength(self, step: int, max_iters: int) -> float:
        """pi at `step`: 0 before start_iter, then linear up to `max` at the end of the ramp."""
        if self.max == 0 or step < self.start_iter:
            return 0.0
        return self.max * min(1.0, (step - self.start_iter) / max(1, self.end(max_iters) - self.start_iter))


@dataclass
class LossConfig:
    weight_by_mask_ratio: bool = False  # multiply by sqrt(1 / masked fraction)
    label_smoothing: Annotated[float, Interval(ge=0, lt=1)] = 0.0  # u, spread over the base classes
    entropy_penalty: EntropyPenaltyConfig = field(default_factory=EntropyPenaltyConfig)
    reduction: Reduction = Reduction.token

    # the setting that turns each modifier off (the default), keyed as `chosen` names them
    OFF: ClassVar[dict[str, str]] = {
        "weight_by_mask_ratio": "weight_by_mask_ratio=false",
        "label_smoothing": "label_smoothing=0",
        "entropy_penalty": "entropy_penalty.max=0",
        "reduction": "reduction=token",
    }

    def chosen(self) -> list[str]:
        """The keys of the modifiers this config turns on."""
        on = {
            "weight_by_mask_ratio": self.weight_by_mask_ratio,
            "label_smoothing": self.label_smoothing > 0,
            "entropy_penalty": self.entropy_penalty.max > 0,
            "reduction": self.reduction == Reduction.sample,
        }
        return [key for key, chosen in on.items() if chosen]

    def build(self, base_classes: int) -> "ClassificationLoss":
        return ClassificationLoss(self, base_classes)


@dataclass
class Predictions:
    """What a classification loss is computed from, on the device. N positions, B samples, C classes.

    logits:          (N, C) at the positions the loss covers; ids >= base_classes are special
    targets:         (N,) the correct class ids (base ids)
    rows:            B, the samples of the micro-batch
    row:             (N,) the sample of each position; None: B rows of N / B positions each
    mask_ratio:      (B,) each sample's masked fraction; None where the mode masks nothing
    position_weight: (N,) e.g. class weights; the token mean becomes a weighted mean
    sample_weight:   (B,) a per-sample factor (`wrongness`) for reduction=sample
    """

    logits: torch.Tensor
    targets: torch.Tensor
    rows: int
    row: torch.Tensor | None = None
    mask_ratio: torch.Tensor | None = None
    position_weight: torch.Tensor | None = None
    sample_weight: torch.Tensor | None = None

    def sample_of_position(self) -> torch.Tensor:
        if self.row is not None:
            return self.row
        positions = torch.arange(self.targets.numel(), device=self.targets.device)
        return positions // max(1, self.targets.numel() // self.rows)


@dataclass
class TrainingLoss:
    """A micro-batch's training loss (a scalar to backpropagate) and, with the entropy penalty,
    its multiplier and the mean wrong-answer entropy (detached scalars, for logging)."""

    loss: torch.Tensor
    multiplier: torch.Tensor | None = None
    wrong_entropy: torch.Tensor | None = None


def plain_loss(predictions: Predictions) -> torch.Tensor:
    """The unmodified cross-entropy, (weighted) mean over the positions: what evaluation reports."""
    nll = F.cross_entropy(predictions.logits.float(), predictions.targets, reduction="none")
    return _mean(nll, predictions.position_weight)


class EntropyEMA:
    """The entropy penalty's multiplier as logged: an EMA (decay 0.99) over the applied steps, kept
    on the device between checkpoints (updated without a host sync)."""

    def __init__(self):
        self.value = torch.tensor(1.0)

    def update(self, multiplier: torch.Tensor | None) -> None:
        if multiplier is not None:
            self.value = self.value.to(multiplier.device)  # a copy the first time only
            self.value.mul_(ENTROPY_EMA_DECAY).add_(multiplier, alpha=1 - ENTROPY_EMA_DECAY)

    def state_dict(self) -> dict:
        return {"entropy_multiplier_ema": self.value.item()}

    def load_state_dict(self, state: dict) -> None:
        self.value.fill_(state.get("entropy_multiplier_ema", 1.0))


class ClassificationLoss:
    """The training loss of a per-position classifier with the modifiers of `LossConfig`."""

    def __init__(self, cfg: LossConfig, base_classes: int):
        self.cfg, self.base_classes = cfg, base_classes
        self.max_entropy = math.log(base_classes - 1) if base_classes > 2 else 0.0
        self.ema = EntropyEMA()

    def __call__(self, predictions: Predictions, penalty: float = 0.0) -> TrainingLoss:
        """`penalty`: pi at this step (`EntropyPenaltyConfig.strength`)."""
        p = predictions
        log_probs = F.log_softmax(p.logits.float(), dim=-1)
        per_position = self.cross_entropy(log_probs, p.targets)
        entropy = wrong_answer_entropy(log_probs, p.targets, self.base_classes) if self._penalised() else None
        if self.cfg.reduction == Reduction.sample:
            return self._per_sample(p, per_position, entropy, penalty)
        loss = _mean(per_position, p.position_weight)
        if self.cfg.weight_by_mask_ratio:
            loss = loss * _inverse_sqrt(p.mask_ratio.mean())
        if entropy is None:
            return TrainingLoss(loss)
        mean_entropy = entropy.mean()
        multiplier = self.multiplier(mean_entropy, penalty)
        return TrainingLoss(loss * multiplier, multiplier.detach(), mean_entropy.detach())

    def cross_entropy(self, log_probs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """(N,) per-position cross-entropy against the label-smoothed target (section 7):
        -(1 - u) log p(target) - u / (M - 1) * sum of log p over the other base ids."""
        nll = -log_probs.gather(1, targets[:, None]).squeeze(1)
        u = self.cfg.label_smoothing
        if u == 0:
            return nll
        others = -log_probs[:, : self.base_classes].sum(1) - nll
        return (1 - u) * nll + u / max(1, self.base_classes - 1) * others

    def multiplier(self, entropy: torch.Tensor, penalty: float) -> torch.Tensor:
        """1 + pi * (Hmax - H) / Hmax; 1 with a single wrong class (its distribution is uniform)."""
        if self.max_entropy == 0:
            return torch.ones_like(entropy)
        return 1 + penalty * (self.max_entropy - entropy) / self.max_entropy

    def _penalised(self) -> bool:
        # computed from the first step on, so the logged entropy means the same before the ramp
        return self.cfg.entropy_penalty.max > 0

    def _per_sample(self, p: Predictions, per_position, entropy, penalty: float) -> TrainingLoss:
        row = p.sample_of_position()
        weight = p.position_weight if p.position_weight is not None else torch.ones_like(per_position)
        counts = torch.zeros(p.rows, device=weight.device).index_add_(0, row, weight)
        present = counts > 0
        per_sample = _per_row_sum(per_position * weight, row, p.rows) / counts.clamp(min=1e-12)
        if self.cfg.weight_by_mask_ratio:
            per_sample = per_sample * _inverse_sqrt(p.mask_ratio)
        if p.sample_weight is not None:
            per_sample = per_sample * p.sample_weight
        if entropy is None:
            return TrainingLoss(_mean_over_present(per_sample, present))
        positions = _per_row_sum(torch.ones_like(entropy), row, p.rows)
        sample_entropy = _per_row_sum(entropy, row, p.rows) / positions.clamp(min=1)
        multiplier = self.multiplier(sample_entropy, penalty)
        return TrainingLoss(
            _mean_over_present(per_sample * multiplier, present),
            _mean_over_present(multiplier, present).detach(),
            _mean_over_present(sample_entropy, present).detach(),
        )


def wrong_answer_entropy(log_probs: torch.Tensor, targets: torch.Tensor, base_classes: int) -> torch.Tensor:
    """(N,) entropy in nats of the distribution over the wrong base classes at each position: the
    model's probabilities without the correct class, renormalised (SPEC section 7). Differentiable,
    also where a probability underflows to 0."""
    base = log_probs[:, :base_classes]
    correct = F.one_hot(targets, base_classes).bool()
    wrong = base.masked_fill(correct, -math.inf)
    log_q = wrong - wrong.logsumexp(dim=1, keepdim=True)
    return -(log_q.exp() * log_q.masked_fill(correct, 0.0)).sum(1)


def _mean(values: torch.Tensor, weight: torch.Tensor | None) -> torch.Tensor:
    if weight is None:
        return values.mean() if values.numel() else values.sum()  # no target: zero loss, zero gradient
    return (values * weight).sum() / weight.sum().clamp(min=1e-12)


def _mean_over_present(values: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
    """The mean over the samples with at least one target (a boolean mask, so no host sync)."""
    return (values * present).sum() / present.sum().clamp(min=1)


def _per_row_sum(values: torch.Tensor, row: torch.Tensor, rows: int) -> torch.Tensor:
    return torch.zeros(rows, device=values.device, dtype=values.dtype).index_add(0, row, values)


def _inverse_sqrt(ratio: torch.Tensor) -> torch.Tensor:
    """sqrt(1 / rho); 0 where nothing is masked (such a sample has no target to weigh)."""
    return torch.where(ratio > 0, ratio.clamp(min=1e-12).rsqrt(), 0.0)
