"""The evaluation protocol: the text8 and enwik8 presets, and `python -m trainer.evaluate` on a whole split."""

import json
import math
import random
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.conftest import assert_rejected, command_in_process, tiny_overrides, train
from trainer import named_corpora
from trainer.cli import evaluate as cli
from trainer.corpus import CorpusName, DataConfig, prepare
from trainer.errors import DataError
from trainer.tokenization import CharTokenizer
from trainer.vocab import CharTokenizerConfig, Vocabulary
from trainer.whole_split import covering_windows, diffusion_elbo, language_model_nll

SIZE = 200_000  # a stand-in for text8's 10^8 characters: the same split fractions, fast


def text8_like(path, size: int, seed: int = 0) -> None:
    rng = random.Random(seed)
    words = ["".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(1, 9))) for _ in range(500)]
    text = " ".join(rng.choice(words) for _ in range(size // 3))[:size]
    path.write_text(text + " " * (size - len(text)))


@pytest.fixture
def small_text8(monkeypatch):
    monkeypatch.setitem(named_corpora.BENCHMARK_BYTES, "text8", SIZE)


def text8_config(path, cache) -> DataConfig:
    return DataConfig(
        name=CorpusName.text8, path=str(path), cache_dir=str(cache), val_fraction=0.05, test_fraction=0.05
    )


def test_the_text8_preset_splits_90_5_5_by_position_from_the_file_or_its_zip(tmp_path, small_text8):
    text8_like(tmp_path / "text8", SIZE)
    corpus = prepare(text8_config(tmp_path / "text8", tmp_path / "a"), CharTokenizerConfig())
    sizes = [corpus.split_tokens(split) for split in ("train", "val", "test")]
    assert sizes == [SIZE * 90 // 100, SIZE * 5 // 100, SIZE * 5 // 100]
    assert corpus.vocab.base_size == 27 and not corpus.vocab.documents
    text = (tmp_path / "text8").read_text()
    assert corpus.vocab.decode(np.asarray(corpus.split("test"))) == text[-SIZE * 5 // 100 :]
    with zipfile.ZipFile(tmp_path / "text8.zip", "w") as archive:
        archive.write(tmp_path / "text8", "text8")
    zipped = prepare(text8_config(tmp_path / "text8.zip", tmp_path / "b"), CharTokenizerConfig())
    assert np.array_equal(np.asarray(zipped.split("test")), np.asarray(corpus.split("test")))


def test_a_text8_file_of_another_size_or_alphabet_is_refused(tmp_path, small_text8):
    text8_like(tmp_path / "short", SIZE - 1)
    with pytest.raises(DataError, match="holds 199,999 bytes, and text8 is 200,000"):
        prepare(text8_config(tmp_path / "short", tmp_path), CharTokenizerConfig())
    (tmp_path / "upper").write_text("A" + "a" * (SIZE - 1))
    with pytest.raises(DataError, match="'A', not a text8 character"):
        prepare(text8_config(tmp_path / "upper", tmp_path), CharTokenizerConfig())
    assert [p.name for p in tmp_path.iterdir()] == ["short", "upper"]  # no cache entry, no staging


@pytest.mark.slow
def test_the_text8_preset_on_a_file_of_the_real_size_gives_the_standard_split(tmp_path):
    text8_like(tmp_path / "text8", 100_000_000)
    corpus = prepare(text8_config(tmp_path / "text8", tmp_path / "c"), CharTokenizerConfig())
    assert [corpus.split_tokens(s) for s in ("train", "val", "test")] == [90_000_000, 5_000_000, 5_000_000]


@pytest.mark.parametrize("tokens, length", [(1000, 64), (1001, 64), (64, 64), (65, 64), (7, 100)])
def test_the_windows_cover_every_token_once(tokens, length):
    for predicts_next in (True, False):
        counts = np.zeros(tokens, dtype=int)
        for start, stop in covering_windows(tokens, length, predicts_next):
            assert 0 < stop - start <= length
            targets = range(start + 1, stop + 1) if predicts_next else range(start, stop)
            counts[list(targets)] += 1
        assert (counts[1:] == 1).all() and counts[0] == (0 if predicts_next else 1)


class Uniform(torch.nn.Module):
    """Equal logits for every id: its likelihood is ln(classes) per token, exactly."""

    def __init__(self, vocab_size: int):
        super().__init__()
        self.vocab_size = vocab_size

    def forward(self, ids, predict_at=None):
        logits = torch.zeros(*ids.shape, self.vocab_size)
        return logits.flatten(0, 1)[predict_at] if predict_at is not None else logits


def test_a_uniform_model_scores_exactly_ln_m_per_token_on_a_whole_split():
    vocab = Vocabulary(CharTokenizer(tuple("abcdefghij")))
    model = Uniform(vocab.classes)  # only the ids a text can hold
    tokens = np.random.default_rng(0).integers(0, 10, 1000)
    exact = language_model_nll(model, tokens, 64, 4, "cpu", torch.autocast("cpu", enabled=False))
    bound = diffusion_elbo(model, tokens, 64, 4, vocab, 3, "cpu", torch.autocast("cpu", enabled=False))
    assert exact.nats_per_token == pytest.approx(math.log(10)) and exact.tokens == 999
    assert bound.nats_per_token == pytest.approx(math.log(10)) and bound.tokens == 1000
    assert bound.standard_error == pytest.approx(0.0, abs=1e-6)  # (float32 cross-entropies)


def evaluate_command(monkeypatch, capsys, cwd, *args: str):
    """`python -m trainer.evaluate ARGS` in this process: (exit code, stdout, stderr)."""
    return command_in_process(monkeypatch, capsys, cwd, cli.main, "trainer.evaluate", *args)


@pytest.fixture(scope="module")
def held_out_runs(tmp_path_factory, corpus_file) -> dict:
    """A language model and an unmasking model trained with a test split held out."""
    runs = {}
    for mode in ("language_model", "unmasking"):
        run_dir = tmp_path_factory.mktemp(mode)
        train(run_dir, tiny_overrides(corpus_file, f"mode={mode}", "data.test_fraction=0.05"))
        runs[mode] = run_dir
    return runs


def records(run_dir) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "evaluations.jsonl").read_text().splitlines()]


def test_the_command_evaluates_the_test_split_and_the_same_checkpoint_gives_the_same_elbo(
    monkeypatch, capsys, tmp_path, held_out_runs
):
    run = held_out_runs["unmasking"]
    for _ in range(2):
        code, out, err = evaluate_command(monkeypatch, capsys, tmp_path, f"checkpoint={run}", "draws=2")
        assert code == 0, err
    first, again = records(run)[-2:]
    assert first == again and first["split"] == "test" and first["tokens"] == 3000  # 5% of 60,000 characters
    assert first["standard_error_nats"] > 0 and "ELBO" in out
    assert first["bits_per_character"] == pytest.approx(first["nats_per_token"] / math.log(2))


def test_a_language_model_gets_its_exact_nll(monkeypatch, capsys, tmp_path, held_out_runs):
    run = held_out_runs["language_model"]
    code, out, err = evaluate_command(monkeypatch, capsys, tmp_path, f"checkpoint={run}", "split=val")
    assert code == 0, err
    record = records(run)[-1]
    assert record["measure"] == "exact NLL" and record["tokens"] == 6000 - 1 and "standard_error_nats" not in record
    assert record["perplexity"] == pytest.approx(math.exp(record["nats_per_token"]))


@pytest.mark.parametrize(
    "args, fragments",
    [
        (["draws=0"], ["draws", "greater than or equal to 1"]),
        (["split=train"], ["split", "test, val"]),
        (["mode=unmasking"], ["mode", "no such key", "checkpoint, split"]),
        (["block_size=100000"], ["block_size", "longer than the model's"]),
    ],
)
def test_bad_input_is_one_line(monkeypatch, capsys, tmp_path, held_out_runs, args, fragments):
    before = records(held_out_runs["unmasking"]) if (held_out_runs["unmasking"] / "evaluations.jsonl").exists() else []
    code, _, err = evaluate_command(monkeypatch, capsys, tmp_path, f"checkpoint={held_out_runs['unmasking']}", *args)
    assert_rejected(_completed(code, err), *fragments)
    after = records(held_out_runs["unmasking"]) if (held_out_runs["unmasking"] / "evaluations.jsonl").exists() else []
    assert after == before


def _completed(code, err):
    return subprocess.CompletedProcess([], code, "", err)


def test_a_test_split_the_corpus_lacks_and_a_classifier_are_refused(
    monkeypatch, capsys, tmp_path, unmasking_checkpoint, corpus_file
):
    code, _, err = evaluate_command(monkeypatch, capsys, tmp_path, f"checkpoint={unmasking_checkpoint}")
    assert_rejected(_completed(code, err), "split", "without a test split", "data.test_fraction")
    classifier = tmp_path / "classifier"
    train(classifier, tiny_overrides(corpus_file, "mode=token_classification", "max_iters=2", "eval_interval=2"))
    code, _, err = evaluate_command(monkeypatch, capsys, tmp_path, f"checkpoint={classifier}")
    assert_rejected(_completed(code, err), "checkpoint", "token_classification training", "likelihood")


def test_zero_shot_reads_another_corpus_with_the_checkpoints_vocabulary(
    monkeypatch, capsys, tmp_path, held_out_runs, corpus_file
):
    run = held_out_runs["language_model"]
    other = tmp_path / "other.txt"
    other.write_text(corpus_file.read_text()[:20_000])
    code, _, err = evaluate_command(
        monkeypatch, capsys, tmp_path, f"checkpoint={run}", "data=text", f"data.path={other}", "split=val"
    )
    assert code == 0, err
    assert records(run)[-1]["data"]["path"] == str(other) and records(run)[-1]["tokens"] == 2000 - 1
    other.write_text("the king \u00e9 speaks " * 500)
    code, _, err = evaluate_command(
        monkeypatch, capsys, tmp_path, f"checkpoint={run}", "data=text", f"data.path={other}", "split=val"
    )
    assert_rejected(_completed(code, err), "data", "'\u00e9' is not in the vocabulary")


@pytest.mark.slow
def test_two_torchrun_processes_give_one_processs_numbers(tmp_path, held_out_runs):
    import os

    root = Path(__file__).resolve().parent.parent
    env = {**os.environ, "PYTHONPATH": str(root), "OMP_NUM_THREADS": "1"}
    results = []
    for processes in (1, 2):
        launcher = (
            ["-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}"] if processes > 1 else []
        )
        command = [sys.executable, *launcher, "-m", "trainer.evaluate", f"checkpoint={held_out_runs['unmasking']}"]
        done = subprocess.run(
            [*command, "draws=2", "batch_size=8"], cwd=tmp_path, env=env, capture_output=True, text=True
        )
        assert done.returncode == 0, done.stderr[-2000:]
        results.append(records(held_out_runs["unmasking"])[-1])
    assert results[0]["nats_per_token"] == pytest.approx(results[1]["nats_per_token"], rel=1e-9)
    assert results[0]["tokens"] == results[1]["tokens"]
