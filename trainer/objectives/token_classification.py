"""Per-token detection of replaced characters: label 1 where the input differs from the original.

The corruption rate ramps linearly from rate_min to rate_max over rate_warmup steps. Selected
positions get another character drawn uniformly (source=random) or a sample of a frozen
unmasking model (source=model; filled on the device, label 1 only where the sample differs).
"""

from dataclasses import dataclass
from enum import Enum
from typing import Annotated

import torch
import torch.nn.functional as F
from annotated_types import Ge, Interval

from masking import StickyMasking
from masking.corruption import Probability
from models import Attention, Head
from trainer.batches import TokenWindows
from trainer.checkpoint import find_checkpoint
from trainer.errors import ConfigError
from trainer.loss import ClassificationLoss, Predictions
from trainer.objectives.base import (
    Batch,
    ClassifierObjective,
    ModeConfig,
    Objective,
    draw_seed,
    first_rows,
    marks,
)
from trainer.objectives.filler import Fill, Filler
from trainer.vocab import Vocabulary

Rate = Annotated[float, Interval(gt=0, le=1)]


class Selection(str, Enum):
    random = "random"  # every position independently, with the current rate
    sticky = "sticky"  # clusters grown with sticky_p1 / sticky_p2, exactly ceil(rate * T) per row


class ReplacementSource(str, Enum):
    random = "random"  # a uniformly drawn other character
    model = "model"  # a sample of the frozen unmasking model at that position


@dataclass
class TokenClassificationMode(ModeConfig):
    name: str = "token_classification"
    rate_min: Rate = 0.05  # the corruption rate ramps linearly from rate_min ...
    rate_max: Rate = 0.9  # ... to rate_max over rate_warmup iterations, then stays
    rate_warmup: Annotated[int, Ge(0)] = 1000
    selection: Selection = Selection.random
    sticky_p1: Annotated[float, Interval(gt=0, le=1)] = 0.1
    sticky_p2: Probability = 0.5
    source: ReplacementSource = ReplacementSource.random
    class_weights: bool = False  # inverse-frequency class weights per batch
    unmasking_checkpoint: str | None = None  # source=model: the frozen unmasking model
    fill: Fill | None = None  # source=model: how it picks a replacement (null: sample)

    head = Head.token_classifier
    attention = Attention.bidirectional
    loss_refusals = {
        "entropy_penalty": "with two classes there is one wrong answer, so its distribution is always uniform",
    }

    def __post_init__(self):
        super().__post_init__()
        if self.rate_max < self.rate_min:
            raise ConfigError(
                "mode.rate_max",
                f"{self.rate_max} is below mode.rate_min={self.rate_min}",
                "a number in [mode.rate_min, 1]",
            )
        if self.source == ReplacementSource.model and not self.unmasking_checkpoint:
            raise ConfigError(
                "mode.unmasking_checkpoint",
                "missing: source=model fills positions with a frozen unmasking model",
                "the path of a checkpoint of an unmasking run",
            )
        if self.source == ReplacementSource.model:
            find_checkpoint(self.unmasking_checkpoint, "mode.unmasking_checkpoint")
            self.fill = self.fill or Fill.sample
        for key in ("unmasking_checkpoint", "fill"):
            if self.source == ReplacementSource.random and getattr(self, key) is not None:
                raise ConfigError(f"mode.{key}", "is not read with source=random", "null, or mode.source=model")

    def uses_unmasking_model(self) -> bool:
        return self.source == ReplacementSource.model

    def build_objective(self, vocab, curriculum, filler, loss) -> Objective:
        # the loss modifiers act over the classes (original, replaced), all of them "base" classes
        return TokenClassificationObjective(self, vocab, loss.build(self.num_classes), filler)


class TokenClassificationObjective(ClassifierObjective):
    def __init__(self, mode, vocab: Vocabulary, loss: ClassificationLoss, filler: Filler | None = None):
        super().__init__(loss)
        self.mode, self.vocab, self.filler = mode, vocab, filler

    def rate(self, step: int) -> float:
        progress = min(1.0, step / self.mode.rate_warmup) if self.mode.rate_warmup else 1.0
        return self.mode.rate_min + progress * (self.mode.rate_max - self.mode.rate_min)

    def make_batch(
        self,
        windows: TokenWindows,
        rows: int,
        generator: torch.Generator,
        stage: int = 0,
        step: int = 0,
        rate: float | None = None,
    ) -> Batch:
        tokens = windows.sample(rows, generator)
        selected = self.select(tokens, self.rate(step) if rate is None else rate, generator)
        seed = draw_seed(generator)
        if self.filler is not None:  # the frozen model completes the masked positions on the device
            masked = torch.where(selected, self.vocab.mask_id, tokens)
            return Batch(
                inputs=masked,
                targets=tokens,
                predict_at=selected.flatten().nonzero().squeeze(1),
                mask=selected,
                fill_seed=seed,
            )
        replaced = torch.where(selected, self.other_characters(tokens, generator), tokens)
        return Batch(inputs=replaced, targets=selected.long(), mask=selected)

    def validation_set(self, windows, samples, batch_size, generator) -> list[Batch]:
        """Batches at rates spread evenly over the whole ramp, so every difficulty is measured."""
        starts = range(0, samples, batch_size)
        rates = torch.linspace(self.mode.rate_min, self.mode.rate_max, len(starts)).tolist()
        return [
            self.make_batch(windows, min(batch_size, samples - start), generator, rate=rate)
            for start, rate in zip(starts, rates)
        ]

    def select(self, tokens: torch.Tensor, rate: float, generator: torch.Generator) -> torch.Tensor:
        if self.mode.selection == Selection.sticky:
            return StickyMasking(rate, self.mode.sticky_p1, self.mode.sticky_p2).select(tokens, generator)
        return torch.rand(tokens.shape, generator=generator) < rate

    def other_characters(self, tokens: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """A uniform draw from the M - 1 characters that differ from each original one."""
        draw = torch.randint(self.vocab.base_size - 1, tokens.shape, generator=generator)
        return draw + (draw >= tokens).long()

    def on_device(self, batch: Batch) -> Batch:
        if self.filler is None:
            return batch
        filled = self.filler(batch.inputs, batch.targets, batch.predict_at, batch.fill_seed)
        return Batch(inputs=filled, targets=(filled != batch.targets).long(), mask=batch.mask)

    def predictions(self, model, batch: Batch) -> Predictions:
        labels = batch.targets.flatten()
        weight = None
        if self.mode.class_weights:
            # inverse class frequency in this batch (absent classes weigh 0), computed on the device
            counts = torch.bincount(labels, minlength=self.mode.num_classes).float()
            per_class = torch.where(counts > 0, labels.numel() / (self.mode.num_classes * counts.clamp(min=1)), 0.0)
            weight = per_class[labels]
        return Predictions(
            logits=model(batch.inputs).flatten(0, 1),
            targets=labels,
            rows=batch.inputs.size(0),
            mask_ratio=batch.mask.float().mean(1),
            position_weight=weight,
        )

    @torch.no_grad()
    def show(self, model, batches: list[Batch], rows: int) -> list[dict]:
        """The input text, with `^` under the replaced characters and under the predicted ones."""
        records = []
        for batch, row in first_rows(batches, rows):
            predicted = model(batch.inputs[row : row + 1]).argmax(-1)[0]
            records.append(
                {
                    "sample": len(records),
                    "text": self.vocab.decode(batch.inputs[row].tolist()),
                    "replaced": marks(batch.targets[row]),
                    "predicted": marks(predicted),
                }
            )
        return records

    def collect(self, model, batches: list[Batch]) -> dict[str, torch.Tensor]:
        """Per position: cross-entropy, predicted class, true class."""
        losses, predictions, labels = [], [], []
        for batch in batches:
            logits = model(batch.inputs).float()
            losses.append(F.cross_entropy(logits.flatten(0, 1), batch.targets.flatten(), reduction="none"))
            predictions.append(logits.argmax(-1).flatten())
            labels.append(batch.targets.flatten())
        return {"loss": torch.cat(losses), "predicted": torch.cat(predictions), "label": torch.cat(labels)}

    def summarize(self, values: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        predicted, actual = values["predicted"] == 1, values["label"] == 1
        true_pos = (predicted & actual).sum().float()
        precision = true_pos / predicted.sum().clamp(min=1)
        recall = true_pos / actual.sum().clamp(min=1)
        replaced = actual.float().mean()
        return {
            "loss": values["loss"].mean(),
            "accuracy": (predicted == actual).float().mean(),
            "precision": precision,
            "recall": recall,
            "f1": 2 * precision * recall / (precision + recall).clamp(min=1e-12),
            "majority_baseline": torch.maximum(replaced, 1 - replaced),  # accuracy of always guessing the larger class
            "replaced_fraction": replaced,
        }
