"""What differs between the training modes, in one place: head, window, curriculum, objective."""

from omegaconf import DictConfig

from models import GPT, GPTConfig
from trainer.checkpoint import check_vocabulary, load_checkpoint
from trainer.config import STAGED_MODES, ModeName
from trainer.curriculum import Curriculum, Stage
from trainer.errors import CheckpointError
from trainer.objectives import (
    Filler,
    LanguageModelObjective,
    Objective,
    SequenceScoringObjective,
    TokenClassificationObjective,
    UnmaskingObjective,
)
from trainer.validation import build_masking, uses_unmasking_model
from trainer.vocab import Vocabulary

HEADS = {
    ModeName.language_model: "lm",
    ModeName.unmasking: "lm",
    ModeName.token_classification: "token_classifier",
    ModeName.sequence_scoring: "sequence_scorer",
}


def window_length(cfg: DictConfig) -> int:
    """Tokens per sampled window: one extra for next-token targets, one fewer to make room for [CLS]."""
    extra = {ModeName.language_model: 1, ModeName.sequence_scoring: -1}
    return cfg.block_size + extra.get(cfg.mode.name, 0)


def model_config(cfg: DictConfig, vocab: Vocabulary) -> GPTConfig:
    m = cfg.model
    return GPTConfig(
        vocab_size=vocab.size,
        block_size=cfg.block_size,
        n_layer=m.n_layer,
        n_head=m.n_head,
        n_embd=m.n_embd,
        dropout=m.dropout,
        bias=m.bias,
        attention=cfg.mode.attention.value,
        positions=m.positions.value,
        rope_base=m.rope_base,
        head=HEADS[cfg.mode.name],
        num_classes=cfg.mode.num_classes,
    )


def make_curriculum(cfg: DictConfig) -> Curriculum | None:
    """The `stages` group; `stages.train: null` is one stage made of the `masking` group."""
    if cfg.mode.name not in STAGED_MODES:
        return None
    if cfg.stages.train is None:
        train = [Stage(build_masking(cfg.masking, "masking"), patience=1)]
    else:
        train = make_stages(cfg.stages.train, "stages.train")
    validation = train if cfg.stages.validation is None else make_stages(cfg.stages.validation, "stages.validation")
    return Curriculum(train, validation, cfg.stages.mix.value)


def make_stages(nodes, key: str) -> list[Stage]:
    return [Stage(build_masking(node, f"{key}[{i}]"), node.val_loss_stale_count) for i, node in enumerate(nodes)]


def make_objective(
    cfg: DictConfig, vocab: Vocabulary, curriculum: Curriculum | None, filler: Filler | None
) -> Objective:
    name = cfg.mode.name
    if name == ModeName.language_model:
        return LanguageModelObjective()
    if name == ModeName.unmasking:
        return UnmaskingObjective(curriculum, vocab)
    if name == ModeName.token_classification:
        return TokenClassificationObjective(cfg.mode, vocab, filler)
    return SequenceScoringObjective(curriculum, vocab, filler)


def load_unmasking_model(cfg: DictConfig, vocab: Vocabulary, device, autocast) -> Filler | None:
    """The frozen unmasking model that fills positions, when the mode uses one."""
    if not uses_unmasking_model(cfg.mode):
        return None
    key = "mode.unmasking_checkpoint"
    payload = load_checkpoint(cfg.mode.unmasking_checkpoint, key=key)
    if payload["config"]["mode"]["name"] != "unmasking":
        raise CheckpointError(
            key, f"it is a checkpoint of a {payload['config']['mode']['name']} run", "a checkpoint of an unmasking run"
        )
    check_vocabulary(payload, vocab, key, "an unmasking checkpoint trained on the same data")
    if payload["architecture"]["block_size"] < window_length(cfg):
        raise CheckpointError(
            key,
            f"its block_size {payload['architecture']['block_size']} is shorter than the "
            f"windows of {window_length(cfg)}",
            "an unmasking model with a block_size this long",
        )
    model = GPT(GPTConfig(**payload["architecture"]))
    model.load_state_dict(payload["model"])
    return Filler(model.to(device), vocab, cfg.mode.fill.value, autocast)
