"""Whether a checkpoint fits a run or another checkpoint: the same vocabulary (tokenizer and ids) and
the same architecture, each difference named in one CheckpointError."""

from trainer.errors import CheckpointError
from trainer.vocab import Vocabulary


def check_vocabulary(payload: dict, vocab: Vocabulary, key: str, allowed: str, other: str = "this corpus") -> None:
    """A checkpoint's ids mean the tokens of its own tokenizer and corpus: refuse one trained with
    another vocabulary, naming both."""
    saved = Vocabulary.from_dict(payload["vocab"])
    if saved != vocab:  # (an equal description: the same kind and size, other text)
        difference = f" ({saved.describe()} vs {vocab.describe()})" * (saved.describe() != vocab.describe())
        raise CheckpointError(key, f"it was trained on another vocabulary than {other}{difference}", allowed)


def architecture_mismatch(saved: dict, configured: dict) -> list[str]:
    """`key: saved -> configured` for every architecture key that differs."""
    keys = sorted(set(saved) | set(configured))
    return [f"{k}: {saved.get(k)} -> {configured.get(k)}" for k in keys if saved.get(k) != configured.get(k)]


def require_compatible(
    payload: dict, saved: dict, configured: dict, vocab: Vocabulary, key: str, problem: str, allowed: tuple[str, str]
) -> None:
    """Refuse a checkpoint whose architecture (`saved`, against this run's `configured`) or vocabulary
    differ: CheckpointError naming `key`, with `problem` and each difference, and what is allowed
    (for the architecture, for the vocabulary)."""
    check_vocabulary(payload, vocab, key, allowed[1])  # first: another vocabulary is another vocab_size too
    differences = architecture_mismatch(saved, configured)
    if differences:
        raise CheckpointError(key, f"{problem}: " + ", ".join(differences), allowed[0])
