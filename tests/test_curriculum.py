"""The stage curriculum: advancement, batch composition, the fixed validation set, resumable state."""

import json
import math

import pytest
import torch
import torch.nn.functional as F

from masking import RandomMasking, StickyMasking
from models import GPT, GPTConfig
from tests.conftest import compose_config, generated_text, tiny_overrides, train
from trainer.batches import Stream, TokenWindows, generator_for
from trainer.contract import check
from trainer.curriculum import Curriculum, Stage
from trainer.errors import ConfigError
from trainer.loss import LossConfig
from trainer.objectives.unmasking import UnmaskingObjective
from trainer.vocab import Vocabulary


def stages(*patience: int) -> list[Stage]:
    return [Stage(StickyMasking(0.25 * (i + 1), 0.2, 0.3), p) for i, p in enumerate(patience)]


def test_advancement_follows_patience_and_stays_at_the_last_stage():
    curriculum = Curriculum(stages(2, 1, 3), stages(2, 1, 3), "cumulative")
    trace = []
    for val_loss in [3.0, 2.5, 2.6, 2.5, 2.4, 2.4, 2.0, 2.1, 2.2, 2.3, 2.4]:
        advance = curriculum.after_eval(val_loss)
        trace.append((curriculum.stage, curriculum.stale_count, curriculum.stage_best, advance is not None))
    assert trace == [
        (0, 0, 3.0, False),  # first eval: a new best
        (0, 0, 2.5, False),  # improve
        (0, 1, 2.5, False),  # stale 1/2
        (1, 0, math.inf, True),  # stale 2/2: advance, the stage's best resets
        (1, 0, 2.4, False),  # best of the new stage
        (2, 0, math.inf, True),  # stale 1/1: advance to the last stage
        (2, 0, 2.0, False),
        (2, 1, 2.0, False),
        (2, 2, 2.0, False),
        (2, 3, 2.0, False),  # patience used up, but the last stage stays
        (2, 4, 2.0, False),
    ]


@pytest.mark.parametrize(
    "mix,stage,expected",
    [
        ("current", 2, [(2, 16)]),
        ("cumulative", 0, [(0, 16)]),
        ("cumulative", 2, [(0, 6), (1, 5), (2, 5)]),
        ("all", 0, [(0, 4), (1, 4), (2, 4), (3, 4)]),
    ],
)
def test_mix_modes_split_the_batch_rows(mix, stage, expected):
    curriculum = Curriculum(stages(1, 1, 1, 1), stages(1), mix)
    assert curriculum.training_rows(stage, 16) == expected


def test_training_batch_rows_carry_their_stage_masking():
    vocab = Vocabulary.from_text(generated_text(2000))
    windows = TokenWindows(vocab.encode(generated_text(5000)), 40)
    curriculum = Curriculum(stages(1, 1, 1), stages(1), "cumulative")
    batch = UnmaskingObjective(curriculum, vocab, LossConfig().build(vocab.base_size)).make_batch(
        windows, 16, generator_for(0, Stream.TRAIN, 0), stage=2
    )
    assert batch.row_stage.tolist() == [0] * 6 + [1] * 5 + [2] * 5
    expected_masks = [10 * (s + 1) for s in batch.row_stage.tolist()]
    assert batch.mask.sum(1).tolist() == expected_masks


def canonical14():
    run = check(compose_config(["stages=canonical14"]))
    return run.stages.build(run.masking)


def test_canonical14_validation_set_covers_every_stage_equally():
    vocab = Vocabulary.from_text(generated_text(2000))
    windows = TokenWindows(vocab.encode(generated_text(20_000)), 64)
    objective = UnmaskingObjective(canonical14(), vocab, LossConfig().build(vocab.base_size))
    batches = objective.validation_set(
        windows, samples=20 * 16, batch_size=16, generator=generator_for(1, Stream.VALIDATION, 0)
    )
    rows = torch.cat([b.row_stage for b in batches])
    assert len(batches) == 21 and batches[-1].inputs.size(0) == 322 - 20 * 16
    assert torch.bincount(rows).tolist() == [23] * 14  # ceil(320 / 14) samples per stage, all kept


def test_per_stage_losses_match_a_brute_force_recomputation():
    torch.manual_seed(0)
    vocab = Vocabulary.from_text(generated_text(2000))
    windows = TokenWindows(vocab.encode(generated_text(20_000)), 32)
    curriculum = Curriculum(
        stages(1, 1),
        [Stage(StickyMasking(0.3, 0.2, 0.3), 1), Stage(RandomMasking(0.6), 1), Stage(StickyMasking(0.7, 0.1, 0.9), 1)],
        "cumulative",
    )
    objective = UnmaskingObjective(curriculum, vocab, LossConfig().build(vocab.base_size))
    batches = objective.validation_set(
        windows, samples=50, batch_size=16, generator=generator_for(2, Stream.VALIDATION, 0)
    )
    model = GPT(GPTConfig(vocab_size=vocab.size, block_size=32, n_layer=1, n_head=2, n_embd=32)).eval()
    metrics = objective.evaluate(model, batches)

    sums, counts = [0.0, 0.0, 0.0], [0, 0, 0]
    with torch.no_grad():
        for batch in batches:
            originals = batch.inputs.clone().flatten()
            originals[batch.predict_at] = batch.targets
            logits = model(batch.inputs)  # every position, then pick the masked ones row by row
            for row in range(batch.inputs.size(0)):
                masked = batch.mask[row]
                losses = F.cross_entropy(
                    logits[row][masked], originals.view_as(batch.inputs)[row][masked], reduction="none"
                )
                stage = int(batch.row_stage[row])
                sums[stage] += losses.sum().item()
                counts[stage] += int(masked.sum())
    for stage in range(3):
        assert metrics[f"stage_{stage}_loss"] == pytest.approx(sums[stage] / counts[stage], rel=1e-5)
    assert metrics["loss"] == pytest.approx(sum(sums) / sum(counts), rel=1e-5)


@pytest.mark.parametrize(
    "override,key",
    [
        ("stages.train.1.type=zigzag", "stages.train[1].type"),
        ("stages.train.2.p1_probability=0", "stages.train[2].p1_probability"),
        ("stages.train.0.max_masked_ratio=1.5", "stages.train[0].max_masked_ratio"),
        ("stages.train.3.val_loss_stale_count=0", "stages.train[3].val_loss_stale_count"),
    ],
)
def test_bad_stage_names_its_index_and_key(override, key):
    with pytest.raises(ConfigError) as err:
        check(compose_config(["stages=easy_to_hard", override]))
    assert err.value.key == key


@pytest.mark.parametrize("preset", ["single", "easy_to_hard", "canonical14"])
def test_every_stages_preset_runs(tmp_path, corpus_file, preset):
    trainer, printed = train(
        tmp_path,
        tiny_overrides(
            corpus_file,
            f"stages={preset}",
            "masking=sticky" if preset == "single" else "batch_size=16",
            "max_iters=4",
            "eval_interval=2",
        ),
    )
    final = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()][-1]
    n = len(trainer.curriculum.validation)
    assert all(f"val/stage_{i}_loss" in final for i in range(n)) and f"val/stage_{n}_loss" not in final
    if n > 1:
        assert "validation stages" in printed


PATIENT_STAGES = [
    "stages=easy_to_hard",
    "stages.train.0.val_loss_stale_count=1",
    "stages.train.1.val_loss_stale_count=1",
    "eval_interval=2",
    "optim.lr=1e-2",
    "optim.lr_decay_iters=30",
    "optim.warmup_iters=0",
]


def test_resume_continues_at_the_same_stage(tmp_path, corpus_file):
    straight, _ = train(tmp_path / "a", tiny_overrides(corpus_file, "max_iters=30", *PATIENT_STAGES))

    def records(run):
        return [json.loads(line) for line in (tmp_path / run / "metrics.jsonl").read_text().splitlines()]

    advances = [r for r in records("a") if r.get("event") == "stage_advance"]
    assert advances and all(r["stage/index"] >= 1 for r in advances)
    stop_at = advances[0]["step"] + 2  # stop two steps after the first advance, then resume
    train(tmp_path / "b", tiny_overrides(corpus_file, f"max_iters={stop_at}", *PATIENT_STAGES))
    resumed, _ = train(tmp_path / "b", tiny_overrides(corpus_file, "max_iters=30", "resume=auto", *PATIENT_STAGES))

    def after(run):
        return [
            (r["step"], r.get("stage/index"), r.get("stage/stale_count"), r.get("val/loss"))
            for r in records(run)
            if r["step"] > stop_at and "val/loss" in r
        ]

    assert after("a") == after("b")
    assert (resumed.curriculum.stage, resumed.curriculum.stale_count, resumed.curriculum.stage_best) == (
        straight.curriculum.stage,
        straight.curriculum.stale_count,
        straight.curriculum.stage_best,
    )
