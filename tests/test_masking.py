"""Behaviour of the masking strategies: exact counts, shapes of masks, corruption mix, determinism, validation."""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import torch

from masking import (
    STRATEGIES,
    Corruption,
    ElboMasking,
    MaskingConfigError,
    RandomMasking,
    SpanMasking,
    StickyMasking,
    strategy_class,
)
from masking.sticky import ROUNDS_PER_SYNC

VOCAB = 65
MASK_ID = VOCAB  # the mask id sits right after the base vocabulary


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def tokens(batch: int, seq_len: int, seed: int = 123) -> torch.Tensor:
    return torch.randint(0, VOCAB, (batch, seq_len), generator=gen(seed))


def run_lengths(mask: torch.Tensor) -> list[list[int]]:
    """Lengths of the contiguous True runs of every row (plain Python, test side only)."""
    out = []
    for row in mask.tolist():
        runs, current = [], 0
        for bit in row + [False]:
            if bit:
                current += 1
            elif current:
                runs.append(current)
                current = 0
        out.append(runs)
    return out


@pytest.mark.parametrize(
    ("ratio", "p1", "p2", "seq_len", "batch", "expected"),
    [
        (1.0, 0.1, 0.5, 17, 3, 17),
        (0.4, 0.15, 0.3, 33, 8, 14),  # ceil(13.2)
        (0.7, 0.2, 0.9, 10, 5, 7),  # 0.7 * 10 is 7.000000000000001 in floats: still 7
        (0.25, 1.0, 0.0, 7, 6, 2),  # ceil(1.75)
        (0.5, 0.01, 0.0, 9, 16, 5),  # tiny p1: rows short after the round budget get topped up
        (0.3, 0.5, 1.0, 101, 32, 31),  # ceil(30.3), odd T
    ],
)
def test_sticky_gives_exactly_target_count(ratio, p1, p2, seq_len, batch, expected):
    strategy = StickyMasking(ratio, p1, p2)
    assert strategy.target_count(seq_len) == expected
    result = strategy(tokens(batch, seq_len), mask_id=MASK_ID, base_vocab_size=VOCAB, generator=gen())
    assert result.mask.shape == (batch, seq_len) and result.mask.dtype == torch.bool
    assert result.mask.sum(dim=1).tolist() == [expected] * batch


def test_sticky_clusters_more_with_high_p2():
    x = tokens(64, 128)

    def mean_run(p2: float) -> float:
        mask = StickyMasking(0.3, 0.05, p2, corruption=None).select(x, gen(1))
        runs = [r for row in run_lengths(mask) for r in row]
        return sum(runs) / len(runs)

    isolated, sticky = mean_run(0.0), mean_run(0.9)
    assert sticky > 2 * isolated, (isolated, sticky)


def test_random_ratios_spread_over_range():
    max_ratio = 0.6
    x = tokens(4096, 128)
    ratios = RandomMasking(max_ratio).select(x, gen()).float().mean(dim=1)
    assert abs(ratios.mean().item() - max_ratio / 2) < 0.02
    assert ratios.max().item() <= max_ratio + 0.15  # binomial noise around r_b <= max
    assert (ratios > 0.8 * max_ratio).float().mean().item() > 0.1
    assert (ratios < 0.2 * max_ratio).float().mean().item() > 0.1


@pytest.mark.parametrize(("spans", "expected"), [(1, 1 / 3), (5, 5 / 11)])
def test_span_expected_ratio(spans, expected):
    # Continuous limit: k of the 2k+1 spacings between 2k sorted uniforms, k/(2k+1); inclusive ends add ~k/T.
    ratio = SpanMasking(spans).select(tokens(2048, 512), gen()).float().mean().item()
    assert abs(ratio - expected) < 0.02, ratio


@pytest.mark.parametrize("spans", [1, 3, 5])
def test_span_masks_are_at_most_k_contiguous_runs(spans):
    mask = SpanMasking(spans).select(tokens(256, 40), gen(spans))
    counts = [len(runs) for runs in run_lengths(mask)]
    assert max(counts) <= spans
    assert min(counts) >= 1  # 2k points always make at least one non-empty span


def test_span_empty_cases_and_plain_mask_fill():
    x = tokens(8, 1)
    assert not SpanMasking(3).select(x, gen()).any()
    x = tokens(32, 64)
    result = SpanMasking(4)(x, mask_id=MASK_ID, base_vocab_size=VOCAB, generator=gen())
    assert torch.equal(result.corrupted[result.mask], torch.full_like(x[result.mask], MASK_ID))
    assert torch.equal(result.corrupted[~result.mask], x[~result.mask])


def test_corruption_proportions_and_untouched_positions():
    x = tokens(512, 512)
    selected = torch.rand(x.shape, generator=gen(5)) < 0.5
    out = Corruption().apply(x, selected, mask_id=MASK_ID, base_vocab_size=VOCAB, generator=gen())
    assert torch.equal(out[~selected], x[~selected])
    picked, orig = out[selected], x[selected]
    masked = (picked == MASK_ID).float().mean().item()
    changed = ((picked != MASK_ID) & (picked != orig)).float().mean().item()
    # A random id equals the original with probability 1/VOCAB, so "changed" slightly undercounts random_prob.
    assert abs(masked - 0.8) < 0.01
    assert abs(changed - 0.1 * (1 - 1 / VOCAB)) < 0.01
    assert abs((picked == orig).float().mean().item() - (0.1 + 0.1 / VOCAB)) < 0.01
    non_mask = picked[picked != MASK_ID]
    assert non_mask.min().item() >= 0 and non_mask.max().item() < VOCAB
    assert out.dtype == x.dtype


def test_corruption_all_random_stays_in_base_vocab():
    x = tokens(64, 64)
    selected = torch.ones_like(x, dtype=torch.bool)
    out = Corruption(0.0, 1.0).apply(x, selected, mask_id=MASK_ID, base_vocab_size=10, generator=gen())
    assert out.min().item() >= 0 and out.max().item() < 10


@pytest.mark.parametrize("stratified", [True, False])
def test_elbo_masks_n_uniform_over_1_to_T_with_mask_id_only(stratified):
    # the likelihood bound's n ~ U{1..T}: every count equally often, each row exactly n [MASK] ids
    x = tokens(4096, 16)
    result = ElboMasking(stratified)(x, mask_id=MASK_ID, base_vocab_size=VOCAB, generator=gen())
    counts = torch.bincount(result.mask.sum(dim=1), minlength=17)
    assert counts[0] == 0 and counts[1:].min() > 0.8 * 256 and counts[1:].max() < 1.2 * 256
    assert torch.equal(result.corrupted, x.masked_fill(result.mask, MASK_ID))


def test_elbo_stratified_rows_cover_every_level_once():
    strategy = ElboMasking()
    counts = strategy.counts(16, 16, gen(3), torch.device("cpu"))
    assert sorted(counts.tolist()) == list(range(1, 17))  # B = T: one row per masking level
    assert strategy.describe() == "elbo n~U{1..T} stratified"


STRATEGY_CASES = [
    StickyMasking(0.4, 0.15, 0.3),
    RandomMasking(0.5),
    SpanMasking(3),
    ElboMasking(),
    ElboMasking(stratified=False),
]


@pytest.mark.parametrize("strategy", STRATEGY_CASES, ids=lambda s: s.describe())
def test_same_seed_same_output_different_seed_differs(strategy):
    x = tokens(32, 48)
    a, b, c = (strategy(x, mask_id=MASK_ID, base_vocab_size=VOCAB, generator=gen(s)) for s in (7, 7, 8))
    assert torch.equal(a.mask, b.mask) and torch.equal(a.corrupted, b.corrupted)
    assert not torch.equal(a.mask, c.mask)
    assert torch.equal(x, tokens(32, 48))  # the input is never modified in place


@pytest.mark.parametrize("strategy", STRATEGY_CASES, ids=lambda s: s.describe())
def test_result_ratio_matches_mask(strategy):
    result = strategy(tokens(16, 30), mask_id=MASK_ID, base_vocab_size=VOCAB, generator=gen())
    assert result.ratio().shape == (16,)
    assert torch.allclose(result.ratio(), result.mask.float().mean(dim=1))


def test_describe_lines():
    assert StickyMasking(0.4, 0.15, 0.3, corruption=None).describe() == "sticky r=0.40 p1=0.15 p2=0.30"
    assert RandomMasking(0.5).describe() == "random r<=0.50 corrupt=0.80/0.10/0.10"
    assert SpanMasking(2).describe() == "span k=2"


# Ranges (e.g. a ratio in [0, 1]) are declared on the fields and checked by the trainer's config
# contract; what each strategy checks itself are the settings that could never train.
@pytest.mark.parametrize(
    ("build", "key"),
    [
        (lambda: StickyMasking(0.4, 0.0, 0.3), "p1_probability"),
        (lambda: StickyMasking(0.0, 0.1, 0.3), "target_masked_ratio"),
        (lambda: RandomMasking(0.0), "max_masked_ratio"),
        (lambda: SpanMasking(0), "spans_count"),
        (lambda: Corruption(0.8, 0.3), "random_prob"),
        (lambda: StickyMasking(type="random"), "type"),
        (lambda: RandomMasking(0.5, corruption="bert"), "corruption"),
        (lambda: strategy_class("bert"), "type"),
    ],
)
def test_bad_params_raise_with_key(build, key):
    with pytest.raises(MaskingConfigError) as info:
        build()
    assert info.value.key == key
    assert "\n" not in str(info.value) and f"allowed: {info.value.allowed}" in str(info.value)


def test_error_messages():
    with pytest.raises(MaskingConfigError) as info:
        StickyMasking(0.4, 0.0, 0.3)
    assert str(info.value) == (
        "p1_probability=0.0: sticky masking cannot reach its target with p1_probability=0; allowed: a number in (0, 1]"
    )
    with pytest.raises(MaskingConfigError) as info:
        SpanMasking(0)
    assert "masks no position" in str(info.value)
    with pytest.raises(MaskingConfigError) as info:
        strategy_class("bert")
    assert info.value.allowed == "sticky, random, span, elbo"
    assert str(info.value) == "type='bert': unknown masking strategy; allowed: sticky, random, span, elbo"


def test_strategies_by_config_name():
    assert STRATEGIES == {"sticky": StickyMasking, "random": RandomMasking, "span": SpanMasking, "elbo": ElboMasking}
    assert strategy_class("span") is SpanMasking
    # the defaults are the masking group's defaults; sticky and random corrupt BERT-style, span does not
    assert StickyMasking() == StickyMasking(0.4, 0.15, 0.3, corruption=Corruption(0.8, 0.1))
    assert RandomMasking().corruption == Corruption() and hasattr(SpanMasking(), "__dataclass_fields__") is not False
    assert "corruption" not in SpanMasking.__dataclass_fields__


SYNC_METHODS = ("item", "tolist", "__bool__", "__int__", "__float__", "__index__")


@contextmanager
def count_syncs() -> Iterator[list[int]]:
    """Count calls of the Tensor methods that copy a value to the host."""
    calls = [0]
    originals = {name: getattr(torch.Tensor, name) for name in SYNC_METHODS}

    def counting(original):
        def wrapper(self, *args, **kwargs):
            calls[0] += 1
            return original(self, *args, **kwargs)

        return wrapper

    try:
        for name, original in originals.items():
            setattr(torch.Tensor, name, counting(original))
        yield calls
    finally:
        for name, original in originals.items():
            setattr(torch.Tensor, name, original)


def test_strategies_issue_no_per_row_syncs():
    sticky = StickyMasking(0.5, 0.15, 0.5)
    syncs = {}
    for batch in (1, 64):
        x = tokens(batch, 64)
        with count_syncs() as calls:
            sticky(x, mask_id=MASK_ID, base_vocab_size=VOCAB, generator=gen())
        syncs[batch] = calls[0]
    bound = math.ceil(StickyMasking.max_rounds(sticky.target_count(64)) / ROUNDS_PER_SYNC)
    assert 1 <= syncs[64] <= 5 and syncs[64] <= bound, syncs  # one per chunk of rounds, never one per row
    assert syncs[1] <= syncs[64]

    # Worst case: tiny p1 runs the whole round budget, still one sync per chunk.
    slow = StickyMasking(0.5, 0.001, 0.0)
    with count_syncs() as calls:
        slow(tokens(64, 16), mask_id=MASK_ID, base_vocab_size=VOCAB, generator=gen())
    assert calls[0] <= math.ceil(StickyMasking.max_rounds(slow.target_count(16)) / ROUNDS_PER_SYNC)

    for strategy in (RandomMasking(0.5), SpanMasking(5), ElboMasking()):
        with count_syncs() as calls:
            strategy(tokens(64, 64), mask_id=MASK_ID, base_vocab_size=VOCAB, generator=gen())
        assert calls[0] == 0, strategy.describe()
