"""What every training objective provides: batches, a loss, and evaluation metrics."""

from abc import ABC, abstractmethod
from dataclasses import dataclass, fields, replace

import torch

from trainer.batches import TokenWindows


def host_values(metrics: dict[str, torch.Tensor]) -> dict[str, float]:
    """Device metrics as floats, read with one host sync for all of them."""
    return dict(zip(metrics, torch.stack(list(metrics.values())).tolist()))


def draw_seed(generator: torch.Generator) -> int:
    """A seed for randomness that happens later on the device, drawn from the batch's own generator."""
    return int(torch.randint(2**62, (), generator=generator))


@dataclass(frozen=True)
class Batch:
    """One micro-batch. Built on the CPU by the batch stream, moved to the device by the loop.

    inputs:     (B, T) token ids fed to the model
    targets:    the ids (or labels) the loss compares with: (B, T), or (N,) at `predict_at`
    predict_at: flat indices b*T + t of the positions the loss covers (None: every position)
    mask:       (B, T) bool, the selected positions of a masking strategy (None: no masking)
    row_stage:  (B,) the curriculum stage each row was masked by (None: no curriculum)
    fill_seed:  seeds the device-side sampling of a frozen model that completes the batch
    """

    inputs: torch.Tensor
    targets: torch.Tensor
    predict_at: torch.Tensor | None = None
    mask: torch.Tensor | None = None
    row_stage: torch.Tensor | None = None
    fill_seed: int = 0

    def to(self, device: torch.device) -> "Batch":
        non_blocking = device.type == "cuda"

        def move(t):
            if t is None:
                return None
            if non_blocking:
                t = t.pin_memory()
            return t.to(device, non_blocking=non_blocking)

        tensors = {f.name: move(getattr(self, f.name)) for f in fields(self) if f.name != "fill_seed"}
        return replace(self, **tensors)

    @property
    def num_targets(self) -> int:
        """Known on the CPU side, so normalising by it costs no device sync."""
        return self.targets.numel()


class Objective(ABC):
    """A training mode. Subclasses know how to build batches and score a model on them."""

    #: the extra window length a batch needs (1 for next-token prediction)
    window_extra = 0

    @abstractmethod
    def make_batch(
        self, windows: TokenWindows, rows: int, generator: torch.Generator, stage: int = 0, step: int = 0
    ) -> Batch:
        """Build a CPU training batch of `rows` samples for curriculum `stage` and training `step`,
        drawing only from `generator`."""

    def validation_set(
        self, windows: TokenWindows, samples: int, batch_size: int, generator: torch.Generator
    ) -> list[Batch]:
        """The fixed validation set: `samples` rows in batches of `batch_size`, built once."""
        return [
            self.make_batch(windows, min(batch_size, samples - start), generator)
            for start in range(0, samples, batch_size)
        ]

    def on_device(self, batch: Batch) -> Batch:
        """Finish a batch that has reached the device (e.g. fill it with a frozen model's predictions)."""
        return batch

    @abstractmethod
    def loss(self, model: torch.nn.Module, batch: Batch) -> torch.Tensor:
        """The scalar training loss of `model` on `batch` (a device tensor; no host sync)."""

    @abstractmethod
    def evaluate(self, model: torch.nn.Module, batches: list[Batch]) -> dict[str, float]:
        """Validation metrics over `batches`, keyed without the `val/` prefix ("loss", ...)."""
