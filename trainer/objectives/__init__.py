"""Training objectives, one per mode: batches, loss and evaluation metrics."""

from trainer.objectives.base import Batch, Objective
from trainer.objectives.language_model import LanguageModelObjective
from trainer.objectives.unmasking import UnmaskingObjective

__all__ = ["Batch", "Objective", "LanguageModelObjective", "UnmaskingObjective"]
