"""What one optimizer step hands around: its data, its loss over micro-batches and ranks, its
device metrics, and the stop a signal asks for."""

from dataclasses import dataclass
from pathlib import Path

import torch

from trainer.batches import BatchStream, TokenWindows
from trainer.distributed import Distributed
from trainer.loss import TrainingLoss
from trainer.objectives import Batch


class StopRequested(Exception):
    """Training stopped on a signal after writing a checkpoint (None: nothing learnt yet, step 0)."""

    def __init__(self, signal_number: int, step: int, checkpoint: Path | None):
        self.signal_number, self.step, self.checkpoint = signal_number, step, checkpoint
        super().__init__(f"signal {signal_number} at step {step}")


@dataclass
class StepMetrics:
    """Device tensors of one optimizer step; read on the host only at log steps."""

    loss: torch.Tensor
    grad_norm: torch.Tensor
    entropy_multiplier: torch.Tensor | None = None  # the loss's entropy penalty, when it is on
    wrong_entropy: torch.Tensor | None = None


@dataclass
class Data:
    stream: BatchStream  # training batches, prepared ahead
    train_windows: TokenWindows  # for the fresh training batches of an evaluation
    validation_set: list[Batch]  # fixed, on the device
    bytes_per_token: float = 1.0  # UTF-8 bytes of text per token of the validation split
    characters: bool = True  # whether an id is one character (a char vocabulary)

    def in_text_units(self, metrics: dict[str, float]) -> dict[str, float]:
        """Bits per byte of UTF-8 text beside each bits-per-token metric (`bpc`, `bpc_bound`): one scale
        for every tokenizer. Bits per token are bits per character only for a char vocabulary; the
        others do not report them."""
        for per_token, per_byte in (("bpc", "bpb"), ("bpc_bound", "bpb_bound")):
            if per_token in metrics:
                metrics[per_byte] = metrics[per_token] / self.bytes_per_token
                if not self.characters:
                    del metrics[per_token]
        return metrics

    def step_batches(self, step: int, stage: int, rollbacks: int) -> list[Batch]:
        """This process's CPU micro-batches of `step` (global micro-step indices); the rollback count
        keys them, so a re-run step after a rollback draws fresh batches."""
        return [self.stream.get(step, micro_step, stage, rollbacks) for micro_step in self.stream.micro_steps]


def weighted_sum(parts: list[tuple[float, TrainingLoss]]) -> TrainingLoss:
    """The step's loss from its micro-batches' (share, loss): losses already carry their share."""
    loss = torch.stack([part.loss for _, part in parts]).sum()
    if parts[0][1].multiplier is None:
        return TrainingLoss(loss)
    multiplier = sum(share * part.multiplier for share, part in parts)
    return TrainingLoss(loss, multiplier, sum(share * part.wrong_entropy for share, part in parts))


def summed_over_ranks(loss: TrainingLoss, dist: Distributed) -> TrainingLoss:
    """Each rank holds its micro-batches' part of the step's loss (their shares are of the whole
    step): the sum over ranks is the step's loss, on every rank. One all-reduce on the device, no sync."""
    if not dist.enabled:
        return loss
    parts = [value for value in (loss.loss, loss.multiplier, loss.wrong_entropy) if value is not None]
    total = dist.sum_(torch.stack([part.float() for part in parts]))
    return TrainingLoss(*total.unbind())
