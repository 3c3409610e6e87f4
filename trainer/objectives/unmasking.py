"""Masked-diffusion training: restore the masked positions of a corrupted window.

The loss is the cross-entropy over the selected positions only, averaged over masked tokens. Only
the hidden states of those positions reach the LM head, so no (B, T, V) logits are computed.
Batches mix the curriculum's stages; every row remembers its stage, so evaluation reports each
stage exactly.
"""

import math
from dataclasses import dataclass, field, replace
from typing import Annotated

import torch
import torch.nn.functional as F
from annotated_types import Interval

from models import Attention, Head
from trainer.batches import TokenWindows
from trainer.curriculum import Curriculum
from trainer.knobs import FREE_ON_RESUME
from trainer.loss import ClassificationLoss, Predictions
from trainer.objectives.base import Batch, ClassifierObjective, ModeConfig, Objective
from trainer.objectives.likelihood import bound_terms, originals
from trainer.objectives.staged import MaskedRows, masked_rows, validation_rows
from trainer.sampling.settings import Sampling
from trainer.vocab import Vocabulary

SNR_CLAMP = 100.0


@dataclass
class UnmaskingMode(ModeConfig):
    name: str = "unmasking"
    # passes over the validation windows that estimate val/nll_bound and val/bpc_bound (0: not reported)
    bound_draws: Annotated[int, Interval(ge=0, le=64)] = field(default=1, metadata=FREE_ON_RESUME)

    head = Head.lm
    sampling = Sampling.unmasking
    attention = Attention.bidirectional
    staged = True
    stage_metrics = {
        "loss": "loss",
        "accuracy": "top-1",
        "p_correct": "p(correct)",
        "snr_median": "snr median",
        "mask_ratio_mean": "mask ratio",
    }

    def build_objective(self, vocab, curriculum, filler, loss) -> Objective:
        return UnmaskingObjective(curriculum, vocab, loss.build(vocab.classes), self.bound_draws)


class UnmaskingObjective(ClassifierObjective):
    def __init__(self, curriculum: Curriculum, vocab: Vocabulary, loss: ClassificationLoss, bound_draws: int = 1):
        super().__init__(loss)
        self.curriculum, self.vocab, self.bound_draws = curriculum, vocab, bound_draws
        self.validation_windows = 0  # rows of the validation set: the likelihood bound's strata

    def make_batch(
        self, windows: TokenWindows, rows: int, generator: torch.Generator, stage: int = 0, step: int = 0
    ) -> Batch:
        plan = [(i, self.curriculum.train[i], n) for i, n in self.curriculum.training_rows(stage, rows)]
        return self._assemble(masked_rows(windows, plan, self.vocab, generator))

    def validation_set(
        self, windows: TokenWindows, samples: int, batch_size: int, generator: torch.Generator
    ) -> list[Batch]:
        chunks = validation_rows(self.curriculum.validation, samples, windows, self.vocab, generator, batch_size)
        batches, first_row = [], 0
        for chunk in chunks:
            batches.append(replace(self._assemble(chunk), first_row=first_row))
            first_row += len(chunk.tokens)
        self.validation_windows = first_row
        return batches

    @staticmethod
    def _assemble(rows: MaskedRows) -> Batch:
        predict_at = rows.predict_at
        return Batch(
            inputs=rows.corrupted,
            targets=rows.tokens.flatten()[predict_at],
            predict_at=predict_at,
            mask=rows.mask,
            row_stage=rows.row_stage,
        )

    def predictions(self, model, batch: Batch) -> Predictions:
        # A batch without a single masked position contributes zero loss (and zero gradient).
        return Predictions(
            logits=model(batch.inputs, predict_at=batch.predict_at),
            targets=batch.targets,
            rows=batch.inputs.size(0),
            row=batch.predict_at // batch.inputs.size(1),
            mask_ratio=batch.mask.float().mean(1),
        )

    def samples_with_targets(self, batch: Batch) -> int:
        return int(batch.mask.any(1).sum())  # a CPU tensor: no device sync

    def collect(self, model, batches: list[Batch]) -> dict[str, torch.Tensor]:
        """Per masked token: loss, p(correct), signal-to-noise, top-1 hit, stage. Per row (`row_*`):
        mask ratio, stage."""
        parts = []
        for batch in batches:
            logits = model(batch.inputs, predict_at=batch.predict_at).float()
            probs = logits.softmax(-1)
            p_true = probs.gather(1, batch.targets[:, None]).squeeze(1)
            p_wrong = probs.scatter(1, batch.targets[:, None], 0.0).amax(1)
            parts.append(
                {
                    "loss": F.cross_entropy(logits, batch.targets, reduction="none"),
                    "p_correct": p_true,
                    "snr": (p_true / (p_wrong + 1e-10)).clamp(max=SNR_CLAMP),
                    "correct": (logits.argmax(-1) == batch.targets).float(),
                    "stage": batch.row_stage[batch.predict_at // batch.inputs.size(1)],
                    "row_ratio": batch.mask.float().mean(1),
                    "row_stage": batch.row_stage,
                    **self._bound_terms(model, batch),
                }
            )
        return {key: torch.cat([part[key] for part in parts]) for key in parts[0]}

    def _bound_terms(self, model, batch: Batch) -> dict[str, torch.Tensor]:
        """Per row (`row_bound`, (B, bound_draws)): the likelihood bound's terms for its window."""
        if not self.bound_draws:
            return {}
        windows = originals(batch.inputs, batch.predict_at, batch.targets)
        terms = bound_terms(
            model,
            windows,
            batch.first_row,
            self.validation_windows,
            self.vocab.mask_id,
            self.vocab.classes,
            self.bound_draws,
        )
        return {"row_bound": terms}

    def summarize(self, values: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Overall metrics (token-weighted), the same metrics for every validation stage, and the
        likelihood bound of the validation windows (nats and bits per character)."""
        per_token = {k: v for k, v in values.items() if not k.startswith("row_")}
        per_row = {k.removeprefix("row_"): v for k, v in values.items() if k.startswith("row_")}
        metrics = self._summary(per_token, per_row)
        for stage in range(len(self.curriculum.validation)):
            in_stage = self._summary(
                {k: v[per_token["stage"] == stage] for k, v in per_token.items()},
                {k: v[per_row["stage"] == stage] for k, v in per_row.items()},
            )
            metrics.update({f"stage_{stage}_{name}": value for name, value in in_stage.items()})
        if "bound" in per_row:
            metrics["nll_bound"] = per_row["bound"].mean()  # over every window and draw
            metrics["bpc_bound"] = metrics["nll_bound"] / math.log(2)
        return metrics

    def _summary(self, per_token: dict, per_row: dict) -> dict[str, torch.Tensor]:
        p_correct = per_token["p_correct"].mean()
        return {
            "loss": per_token["loss"].mean(),  # token-weighted
            "p_correct": p_correct,
            "model_vs_random": p_correct * self.vocab.size,
            "accuracy": per_token["correct"].mean(),
            "snr_mean": per_token["snr"].mean(),
            "snr_median": _median(per_token["snr"]),
            "mask_ratio_mean": per_row["ratio"].mean(),
            "mask_ratio_min": per_row["ratio"].min(),
            "mask_ratio_max": per_row["ratio"].max(),
        }


def _median(values: torch.Tensor) -> torch.Tensor:
    """The median, or NaN for a stage that masked nothing (torch.median rejects empty input)."""
    return values.median() if values.numel() else values.new_tensor(math.nan)
