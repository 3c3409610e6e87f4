"""What every training objective provides: batches, a loss, and evaluation metrics."""

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, fields, replace
from typing import ClassVar

import torch

from models import Attention, Head
from trainer.batches import TokenWindows
from trainer.errors import ConfigError
from trainer.loss import ClassificationLoss, LossConfig, Predictions, Reduction, TrainingLoss, plain_loss
from trainer.sampling.settings import SAMPLE_KEYS, Sampling


def host_values(metrics: dict[str, torch.Tensor]) -> dict[str, float]:
    """Device metrics as floats, read with one host sync for all of them."""
    return dict(zip(metrics, torch.stack(list(metrics.values())).tolist()))


def draw_seed(generator: torch.Generator) -> int:
    """A seed for randomness that happens later on the device, drawn from the batch's own generator."""
    return int(torch.randint(2**62, (), generator=generator))


# joins the per-item values of every rank's share of the validation batches (None: an empty share)
Gather = Callable[[dict[str, torch.Tensor] | None], dict[str, torch.Tensor]]


def keep(values: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """One process holds every value already."""
    return values


@dataclass(frozen=True)
class Batch:
    """One micro-batch. Built on the CPU by the batch stream, moved to the device by the loop.

    inputs:     (B, T) token ids fed to the model
    targets:    the ids (or labels) the loss compares with: (B, T), or (N,) at `predict_at`
    predict_at: flat indices b*T + t of the positions the loss covers (None: every position)
    mask:       (B, T) bool, the selected positions of a masking strategy (None: no masking)
    row_stage:  (B,) the curriculum stage each row was masked by (None: no curriculum)
    fill_seed:  seeds the device-side sampling of a frozen model that completes the batch
    first_row:  the index of the batch's first row in the validation set (0 for training batches)
    """

    inputs: torch.Tensor
    targets: torch.Tensor
    predict_at: torch.Tensor | None = None
    mask: torch.Tensor | None = None
    row_stage: torch.Tensor | None = None
    fill_seed: int = 0
    first_row: int = 0

    def to(self, device: torch.device) -> "Batch":
        non_blocking = device.type == "cuda"

        def move(t):
            if t is None:
                return None
            if non_blocking:
                t = t.pin_memory()
            return t.to(device, non_blocking=non_blocking)

        numbers = ("fill_seed", "first_row")
        tensors = {f.name: move(getattr(self, f.name)) for f in fields(self) if f.name not in numbers}
        return replace(self, **tensors)

    @property
    def num_targets(self) -> int:
        """Known on the CPU side, so normalising by it costs no device sync."""
        return self.targets.numel()


class Objective(ABC):
    """A training mode's work: subclasses know how to build batches and score a model on them."""

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
        """The plain scalar loss of `model` on `batch`, as evaluation reports it (a device tensor; no
        host sync)."""

    def training_loss(self, model: torch.nn.Module, batch: Batch, penalty: float) -> TrainingLoss:
        """The loss to train on; `penalty` is the entropy penalty's pi at this step."""
        return TrainingLoss(self.loss(model, batch))

    def units(self, batch: Batch) -> int:
        """What the training loss of a CPU micro-batch is a mean over (its targets): the micro-batches
        of a step are weighted by their share of the step's units, so they add up to one big batch."""
        return batch.num_targets

    def evaluate(self, model: torch.nn.Module, batches: list[Batch], gather: Gather = keep) -> dict[str, float]:
        """Validation metrics over `batches`, keyed without the `val/` prefix ("loss", ...).

        Under several processes each rank passes its share of the batches, and `gather` joins every
        rank's per-item values in batch order, so the metrics are those of one process evaluating
        all of them (no mean of means; a median sees every value).
        """
        with torch.no_grad():
            values = self.collect(model, batches) if batches else None
            return host_values(self.summarize(gather(values)))

    @abstractmethod
    def collect(self, model: torch.nn.Module, batches: list[Batch]) -> dict[str, torch.Tensor]:
        """Per-item values of the batches (per target, per row...): 1-D device tensors whose first
        dimension is the items, in batch order, so shares of the batches concatenate."""

    @abstractmethod
    def summarize(self, values: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The metrics (0-d device tensors) of the collected values of every batch."""

    def applied(self, metrics) -> None:
        """After an applied optimizer step (a skipped or rolled-back one does not count), with its
        StepMetrics (device tensors)."""

    def state_dict(self) -> dict:
        """What a checkpoint keeps of the objective (its loss modifiers' running statistics)."""
        return {}

    def load_state_dict(self, state: dict) -> None:
        """Continue from a checkpoint's state (every key of the run's state; take your own)."""

    def show(self, model: torch.nn.Module, batches: list[Batch], rows: int) -> list[dict]:
        """The model's predictions on the first `rows` validation rows, one record per row with its
        "text": the samples of a mode whose model does not write text (`ModeConfig.sampling` None)."""
        raise NotImplementedError(f"{type(self).__name__} writes text: trainer.sample draws its samples")


def marks(flags: torch.Tensor) -> str:
    """A line with `^` under each position whose flag (T,) is set (a replaced or a filled character)."""
    return "".join("^" if flag else " " for flag in flags.tolist()).rstrip()


def first_rows(batches: list[Batch], rows: int) -> list[tuple[Batch, int]]:
    """(batch, row index) of the first `rows` rows of `batches`."""
    return [(batch, i) for batch in batches for i in range(batch.inputs.size(0))][:rows]


class ClassifierObjective(Objective):
    """An objective whose model predicts a class per position: it trains on the loss modifiers of the
    `loss` group and evaluates the plain cross-entropy."""

    def __init__(self, loss: ClassificationLoss):
        self.classification_loss = loss

    @abstractmethod
    def predictions(self, model: torch.nn.Module, batch: Batch) -> Predictions:
        """The logits at the positions the loss covers, with what the modifiers need."""

    def loss(self, model: torch.nn.Module, batch: Batch) -> torch.Tensor:
        return plain_loss(self.predictions(model, batch))

    def training_loss(self, model: torch.nn.Module, batch: Batch, penalty: float) -> TrainingLoss:
        return self.classification_loss(self.predictions(model, batch), penalty)

    def applied(self, metrics) -> None:
        self.classification_loss.ema.update(metrics.entropy_multiplier)  # on the device: no sync

    def state_dict(self) -> dict:
        return self.classification_loss.ema.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.classification_loss.ema.load_state_dict(state)

    def units(self, batch: Batch) -> int:
        if self.classification_loss.cfg.reduction == Reduction.sample:
            return self.samples_with_targets(batch)
        return batch.num_targets

    def samples_with_targets(self, batch: Batch) -> int:
        """Rows of a CPU batch with at least one target: every row, unless the mode says otherwise."""
        return batch.inputs.size(0)


MODES: dict[str, type["ModeConfig"]] = {}


@dataclass
class ModeConfig:
    """The `mode` config group. A mode is one module under trainer/objectives/ holding a subclass of
    this class and its Objective, plus one file conf/mode/<name>.yaml: the subclass's fields are the
    mode's knobs (with their domains), its class attributes the facts every other part reads.
    """

    name: str = ""  # set by each subclass: the option name in conf/mode/

    head: ClassVar[Head]
    attention: ClassVar[Attention]
    window_offset: ClassVar[int] = 0  # tokens a sampled window holds beyond block_size
    staged: ClassVar[bool] = False  # its data follows the stage curriculum (`stages`, `masking`)
    stage_metrics: ClassVar[dict[str, str]] = {}  # per-stage val metric -> column title of the console table
    # `loss` modifiers that mean nothing in this mode -> why (a config choosing one is refused)
    loss_refusals: ClassVar[dict[str, str]] = {}
    # how its model writes text (trainer.sample); None: it shows predictions on validation rows
    sampling: ClassVar[Sampling | None] = None

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        MODES[cls.__dict__["name"]] = cls  # the class attribute that becomes the field's default

    def __post_init__(self):
        expected = type(self).__dataclass_fields__["name"].default
        if self.name != expected:
            raise ConfigError("mode.name", f"{self.name!r} names another mode", f"{expected}, or mode=NAME to switch")

    @classmethod
    def sample_keys(cls) -> tuple[str, ...]:
        """The `sample` keys this mode reads."""
        return SAMPLE_KEYS[cls.sampling]

    @property
    def num_classes(self) -> int:
        """Logits per position of a token-classifier head: original (0) or replaced (1)."""
        return 2

    def uses_unmasking_model(self) -> bool:
        """Whether a frozen unmasking model fills positions (read from `unmasking_checkpoint`)."""
        return False

    def build_objective(self, vocab, curriculum, filler, loss: LossConfig) -> Objective:
        """The objective that trains this mode, with the loss modifiers of `loss`."""
        raise NotImplementedError
