"""Training objectives, one per mode: batches, loss and evaluation metrics."""

from trainer.objectives.base import Batch, Objective
from trainer.objectives.filler import Filler
from trainer.objectives.language_model import LanguageModelObjective
from trainer.objectives.sequence_scoring import SequenceScoringObjective
from trainer.objectives.token_classification import TokenClassificationObjective
from trainer.objectives.unmasking import UnmaskingObjective

__all__ = [
    "Batch",
    "Filler",
    "LanguageModelObjective",
    "Objective",
    "SequenceScoringObjective",
    "TokenClassificationObjective",
    "UnmaskingObjective",
]
