"""Samples at each evaluation: what a run writes now, printed and kept in samples.jsonl.

The generative modes draw `sample.num_samples` texts with the settings of the `sample` section from
the same seeds at every evaluation, so a run shows how its writing improves; the classifiers show
their predictions on the first validation rows. Sampling draws from its own generators: training
continues exactly as without it.
"""

from collections.abc import Callable
from contextlib import AbstractContextManager

import torch

from trainer.sampling.generate import canvas, drawn_with, generate, records
from trainer.sampling.quality import measure
from trainer.sampling.settings import Sampling, SamplingConfig
from trainer.vocab import Vocabulary

# (the model, the validation set) -> one record per sample, each with "text" (and what a mode adds:
# a score, marks)
Sampler = Callable[[torch.nn.Module, list], list[dict]]


def make_sampler(
    run, vocab: Vocabulary, objective, autocast: AbstractContextManager, reference: torch.nn.Module | None = None
) -> Sampler | None:
    """The sampler of a run config, or None without samples; ConfigError when the `sample` settings
    do not fit the model (a prompt character outside the vocabulary, a canvas longer than the block).
    Its records carry each sample's unigram entropy, and its gen-PPL under `reference` (sample.reference)."""
    settings: SamplingConfig = run.sample
    if settings.num_samples == 0:
        return None
    if run.mode.sampling is None:
        return lambda model, validation_set: objective.show(model, validation_set, settings.num_samples)
    unmasking = run.mode.sampling == Sampling.unmasking
    plan = canvas(settings, vocab, run.block_size, unmasking, prefix="sample.")
    shown = drawn_with(settings, run.mode.sample_keys(), plan)
    seed = settings.seed if settings.seed is not None else run.seed  # fixed: the same at every evaluation

    def sampler(model: torch.nn.Module, validation_set: list) -> list[dict]:
        ids = generate(model, vocab, settings, plan, seed, autocast)
        drawn = records(ids, vocab, seed, shown)
        measure(drawn, ids, vocab, reference, autocast)
        return drawn

    return sampler
