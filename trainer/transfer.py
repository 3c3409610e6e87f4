"""Transfer learning: a trunk from a checkpoint of any mode, frozen or not, and the two-stage unfreeze
(SPEC 10). The optimizer's side of freezing and unfreezing lives in trainer/optimization.py."""

from dataclasses import dataclass
from enum import Enum
from typing import Annotated

import torch
from annotated_types import Ge, Gt

from models import GPT
from trainer.checkpoint import best_or_latest, find_checkpoint, load_checkpoint
from trainer.compatibility import require_compatible
from trainer.errors import CheckpointError, ConfigError
from trainer.vocab import Vocabulary

CLS_INIT_STD = 0.001  # the [CLS] row starts near zero: the trunk has never seen it as input


class TransferKind(str, Enum):
    none = "none"
    fine_tuning = "fine_tuning"  # load the trunk, train everything
    feature_extraction = "feature_extraction"  # load the trunk, freeze it, train the head
    two_stage = "two_stage"  # frozen until unfreeze_at_iteration, then everything trains


@dataclass
class TransferConfig:
    """The `transfer` config group (SPEC 10)."""

    kind: TransferKind = TransferKind.none
    checkpoint: str | None = None  # a checkpoint of any mode: its trunk initialises this model
    unfreeze_at_iteration: Annotated[int, Ge(1)] | None = None  # two_stage only
    unfreeze_lr_multiplier: Annotated[float, Gt(0)] = 1.0  # the trunk's LR after unfreezing: scheduled LR x this

    def __post_init__(self):
        loads = self.kind != TransferKind.none
        if loads and not self.checkpoint:
            raise ConfigError(
                "transfer.checkpoint", f"missing for transfer={self.kind.value}", "the path of a checkpoint of any mode"
            )
        if loads:
            find_checkpoint(self.checkpoint, "transfer.checkpoint")
        if not loads and self.checkpoint:
            raise ConfigError(
                "transfer.checkpoint",
                "is not read with transfer=none",
                "transfer=fine_tuning, feature_extraction or two_stage to load it",
            )
        two_stage = self.kind == TransferKind.two_stage
        if two_stage and self.unfreeze_at_iteration is None:
            raise ConfigError("transfer.unfreeze_at_iteration", "missing for transfer=two_stage", "an integer >= 1")
        if not two_stage and self.unfreeze_at_iteration is not None:
            raise ConfigError(
                "transfer.unfreeze_at_iteration", "only transfer=two_stage unfreezes", "null, or transfer=two_stage"
            )

    @property
    def freezes(self) -> bool:
        return self.kind in (TransferKind.feature_extraction, TransferKind.two_stage)


def load_trunk(model: GPT, path: str, vocab: Vocabulary) -> str:
    """Copy the trunk (`transformer.*`) of the checkpoint at `path` (a run folder: its best.pt, else its
    latest checkpoint); the head keeps its fresh init. Returns a line naming the file read."""
    path = best_or_latest(path, "transfer.checkpoint")
    payload = load_checkpoint(path, key="transfer.checkpoint")
    saved = {k: payload["architecture"].get(k) for k in model.config.trunk()}
    problem = "its trunk differs from the configured model"
    allowed = ("a checkpoint with the same model.* sizes and vocabulary", "a checkpoint trained on the same data")
    require_compatible(payload, saved, model.config.trunk(), vocab, "transfer.checkpoint", problem, allowed)
    trunk = {k: v for k, v in payload["model"].items() if k.startswith("transformer.")}
    if "transformer.wpe.weight" in trunk:  # learned positions: keep the rows this block size uses
        trunk["transformer.wpe.weight"] = trunk["transformer.wpe.weight"][: model.config.block_size]
    try:
        model.load_state_dict(trunk, strict=False)
    except RuntimeError as err:
        raise CheckpointError(
            "transfer.checkpoint",
            f"its trunk does not fit ({str(err).splitlines()[-1].strip()})",
            "a checkpoint with the same model.* sizes",
        ) from None
    with torch.no_grad():
        model.transformer.wte.weight[vocab.cls_id].normal_(0.0, CLS_INIT_STD)
    state, mode = payload["state"], payload["config"]["mode"]["name"]
    return f"transfer: the trunk of {path} (step {state['step']} of {mode} training)"


def parameter_summary(model: torch.nn.Module) -> str:
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    frozen = total - trainable
    return (
        f"parameters: {total:,} total, {trainable:,} trainable ({100 * trainable / total:.1f}%), "
        f"{frozen:,} frozen ({100 * frozen / total:.1f}%)"
    )
