"""Sequence scoring: how much of a text did the unmasking model regenerate?

Positions chosen by the curriculum's current stage are filled by a frozen unmasking model (on
the device, batched, without gradients); the input is [CLS] + the filled window, the target the
fraction of regenerated positions, the prediction a sigmoid score trained with MSE.
"""

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from models import Attention, Head
from trainer.batches import TokenWindows
from trainer.checkpoint import find_checkpoint
from trainer.curriculum import Curriculum
from trainer.errors import ConfigError
from trainer.objectives.base import Batch, ModeConfig, Objective, draw_seed, first_rows, marks
from trainer.objectives.filler import Fill, Filler
from trainer.objectives.staged import MaskedRows, masked_rows, validation_rows
from trainer.vocab import Vocabulary


@dataclass
class SequenceScoringMode(ModeConfig):
    name: str = "sequence_scoring"
    unmasking_checkpoint: str | None = None  # required: the checkpoint of an unmasking run
    fill: Fill = Fill.argmax

    head = Head.sequence_scorer
    attention = Attention.bidirectional
    window_offset = -1  # the window leaves room for [CLS]
    staged = True
    stage_metrics = {"loss": "mse", "mae": "mae", "target_mean": "regenerated"}
    loss_refusals = {
        "label_smoothing": "a sequence scorer regresses a score: it has no classes to smooth over",
        "entropy_penalty": "a sequence scorer regresses a score: it has no wrong answers to spread",
        "weight_by_mask_ratio": "its target is the regenerated fraction itself",
        "reduction": "each sample has one target, so per-sample means are the token mean",
    }

    def __post_init__(self):
        super().__post_init__()
        if not self.unmasking_checkpoint:
            raise ConfigError(
                "mode.unmasking_checkpoint",
                "missing: sequence_scoring fills positions with a frozen unmasking model",
                "the path of a checkpoint of an unmasking run",
            )
        find_checkpoint(self.unmasking_checkpoint, "mode.unmasking_checkpoint")

    def uses_unmasking_model(self) -> bool:
        return True

    def build_objective(self, vocab, curriculum, filler, loss) -> Objective:
        return SequenceScoringObjective(curriculum, vocab, filler)


class SequenceScoringObjective(Objective):
    def __init__(self, curriculum: Curriculum, vocab: Vocabulary, filler: Filler):
        self.curriculum, self.vocab, self.filler = curriculum, vocab, filler

    def make_batch(
        self, windows: TokenWindows, rows: int, generator: torch.Generator, stage: int = 0, step: int = 0
    ) -> Batch:
        plan = [(i, self.curriculum.train[i], n) for i, n in self.curriculum.training_rows(stage, rows)]
        return self._assemble(masked_rows(windows, plan, self.vocab, generator), generator)

    def validation_set(self, windows, samples, batch_size, generator) -> list[Batch]:
        chunks = validation_rows(self.curriculum.validation, samples, windows, self.vocab, generator, batch_size)
        return [self._assemble(chunk, generator) for chunk in chunks]

    @staticmethod
    def _assemble(rows: MaskedRows, generator: torch.Generator) -> Batch:
        seed = draw_seed(generator)
        return Batch(
            inputs=rows.corrupted,
            targets=rows.tokens,
            predict_at=rows.predict_at,
            mask=rows.mask,
            row_stage=rows.row_stage,
            fill_seed=seed,
        )

    def on_device(self, batch: Batch) -> Batch:
        filled = self.filler(batch.inputs, batch.targets, batch.predict_at, batch.fill_seed)
        cls = torch.full((filled.size(0), 1), self.vocab.cls_id, dtype=filled.dtype, device=filled.device)
        return Batch(
            inputs=torch.cat([cls, filled], dim=1),
            targets=batch.mask.float().mean(1),
            mask=batch.mask,
            row_stage=batch.row_stage,
        )

    def loss(self, model, batch: Batch) -> torch.Tensor:
        return F.mse_loss(model(batch.inputs).float(), batch.targets)

    @torch.no_grad()
    def show(self, model, batches: list[Batch], rows: int) -> list[dict]:
        """The filled text, the fraction the unmasking model regenerated, and the predicted score."""
        return [
            {
                "sample": n,
                "text": self.vocab.decode(batch.inputs[row, 1:].tolist()),  # after [CLS]
                "filled": marks(batch.mask[row]),
                "regenerated": float(batch.targets[row]),
                "score": float(model(batch.inputs[row : row + 1]).float()[0]),
            }
            for n, (batch, row) in enumerate(first_rows(batches, rows))
        ]

    def collect(self, model, batches: list[Batch]) -> dict[str, torch.Tensor]:
        """Per row: the model's score, the target (the regenerated fraction), the stage."""
        return {
            "score": torch.cat([model(b.inputs).float() for b in batches]),
            "target": torch.cat([b.targets for b in batches]),
            "stage": torch.cat([b.row_stage for b in batches]),
        }

    def summarize(self, values: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """MSE, MAE, the mean-predictor baseline and Pearson's r overall; MSE, MAE and the mean
        target for every validation stage."""
        scores, targets, stages = values["score"], values["target"], values["stage"]
        errors = scores - targets
        centred_scores, centred_targets = scores - scores.mean(), targets - targets.mean()
        pearson = (centred_scores * centred_targets).sum() / (centred_scores.norm() * centred_targets.norm()).clamp(
            min=1e-12
        )
        metrics = {
            "loss": errors.pow(2).mean(),
            "mae": errors.abs().mean(),
            "baseline_mse": centred_targets.pow(2).mean(),  # always predicting the mean target
            "pearson": pearson,
        }
        for stage in range(len(self.curriculum.validation)):
            rows = stages == stage
            metrics[f"stage_{stage}_loss"] = errors[rows].pow(2).mean()
            metrics[f"stage_{stage}_mae"] = errors[rows].abs().mean()
            metrics[f"stage_{stage}_target_mean"] = targets[rows].mean()
        return metrics
