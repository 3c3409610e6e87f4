"""Sample quality: unigram entropy, generative perplexity, and `python -m trainer.sample reference=...`."""

import json
import math
from types import SimpleNamespace

import pytest
import torch

from tests.conftest import assert_rejected, run_in_process, tiny_overrides, train
from tests.test_sample import sample_command
from trainer.checkpoint import best_or_latest, load_model
from trainer.sampling.decoding import RowNoise, autoregressive
from trainer.sampling.quality import generative_perplexity, unigram_entropy
from trainer.sampling.settings import SamplingConfig
from trainer.tokenization import CharTokenizer
from trainer.vocab import Vocabulary

CLASSES, SPECIALS = 11, 3  # ids 0..10 are text, 11..13 special (mask, [CLS], reserved)


def test_a_constant_sample_has_no_entropy():
    assert unigram_entropy([7] * 50) == 0.0
    assert unigram_entropy(torch.full((9,), 3)) == 0.0
    assert unigram_entropy([]) == 0.0


@pytest.mark.parametrize("k", [2, 5, 26])
def test_k_tokens_used_equally_often_have_entropy_ln_k(k):
    sample = torch.arange(k).repeat(4)[torch.randperm(4 * k)]
    assert unigram_entropy(sample) == pytest.approx(math.log(k), rel=1e-12)
    assert [unigram_entropy(row) for row in torch.stack([sample, torch.zeros_like(sample)])] == pytest.approx(
        [math.log(k), 0.0]
    )


class ConstantModel(torch.nn.Module):
    """Equal logits over the text ids, a large logit on the special ids (which must not count)."""

    def __init__(self, block_size: int):
        super().__init__()
        self.config = SimpleNamespace(block_size=block_size)
        self.unused = torch.nn.Parameter(torch.zeros(1))  # the device the samples go to

    def forward(self, ids):
        logits = torch.zeros(*ids.shape, CLASSES + SPECIALS)
        logits[..., CLASSES:] = 50.0
        return logits


class BigramModel(torch.nn.Module):
    """Logits of the next id read from the current id alone (a causal model of context one)."""

    def __init__(self, block_size: int):
        super().__init__()
        self.config = SimpleNamespace(block_size=block_size)
        self.table = torch.nn.Embedding(CLASSES + SPECIALS, CLASSES + SPECIALS)

    def forward(self, ids):
        assert ids.size(1) <= self.config.block_size
        return self.table(ids)


def test_uniform_logits_give_the_number_of_classes():
    """ln p = -ln C at every position, so the perplexity is exactly C, whatever the tokens and
    however a sample longer than the block (8) is cut into windows."""
    ids = torch.randint(CLASSES, (3, 30))
    ppl = generative_perplexity(ConstantModel(block_size=8), ids, classes=CLASSES)
    assert ppl.shape == (3,) and ppl.tolist() == pytest.approx([CLASSES] * 3, rel=1e-6)


@pytest.mark.parametrize("block_size", [1, 2, 7, 8, 29, 64])
def test_windows_score_every_next_token_once_and_in_place(block_size):
    """A bigram model's NLL does not depend on how much context a window gives, only on which id
    predicts which: any window size must give the direct sum over positions 1..L-1."""
    torch.manual_seed(0)
    model = BigramModel(block_size)
    ids = torch.randint(CLASSES, (3, 30))
    log_p = model.table(ids[:, :-1])[..., :CLASSES].log_softmax(-1)
    nll = -log_p.gather(-1, ids[:, 1:, None]).squeeze(-1)  # (3, 29)
    ppl = generative_perplexity(model, ids, classes=CLASSES, lengths=[30, 6, 1])
    assert ppl[0].item() == pytest.approx(nll[0].mean().exp().item(), rel=1e-5)
    assert ppl[1].item() == pytest.approx(nll[1, :5].mean().exp().item(), rel=1e-5)  # its first 6 ids
    assert math.isnan(ppl[2].item())  # one id: nothing to predict


@pytest.fixture(scope="module")
def runs(tmp_path_factory, corpus_file) -> dict:
    """A language model trained long enough to be confident (150 steps: val perplexity about 2.4 on
    the generated corpus, whose 47 characters would give 47), and an unmasking model of a few steps."""
    lm_dir, unmasking_dir = tmp_path_factory.mktemp("reference_lm"), tmp_path_factory.mktemp("not_a_reference")
    lm = ["mode=language_model", "max_iters=150", "eval_interval=150", "optim.lr=5e-3"]
    train(lm_dir, tiny_overrides(corpus_file, *lm))
    train(unmasking_dir, tiny_overrides(corpus_file))
    return {"language_model": lm_dir, "unmasking": unmasking_dir}


def test_a_models_own_greedy_samples_have_a_low_perplexity(runs):
    """Each greedy id is the most likely one, and -ln max_i p_i <= sum_i p_i (-ln p_i) = H(p) (a minimum
    is at most a mean), so the gen-PPL of greedy samples is at most exp(mean H) along them. The corpus
    draws each word uniformly from 32 (ln 32 = 3.5 nats per word of 4.7 characters with its space: a
    perfect model's perplexity is about exp(0.75) = 2.1 per character), and the model is near that
    (val perplexity 2.4), so its greedy samples stay below 3 (uniform: 47, the characters), and far
    below random text. (They read "The the the the": a low gen-PPL alone hides repetition, hence the
    unigram entropy.)"""
    path = best_or_latest(str(runs["language_model"]), "reference")
    model, payload = load_model(path, "reference", ("language_model",), "")
    vocab = Vocabulary.from_dict(payload["vocab"])
    block = model.config.block_size
    context = torch.from_numpy(vocab.encode("KQ\n").astype("int64"))[:, None]  # 3 samples
    noise = RowNoise(0, 3, torch.device("cpu"))
    greedy = autoregressive(model, context, block - 1, vocab.classes, SamplingConfig(top_k=1), noise)
    with torch.no_grad():
        log_p = model(greedy[:, :-1])[..., : vocab.classes].float().log_softmax(-1)
    entropy_bound = (-(log_p.exp() * log_p).sum(-1)).mean(1).exp()  # (3,)
    ppl = generative_perplexity(model, greedy, classes=vocab.classes)
    assert (ppl <= entropy_bound * (1 + 1e-5)).all()
    assert (ppl < 3).all(), ppl
    random = generative_perplexity(model, torch.randint(vocab.base_size, (3, block)), classes=vocab.classes)
    assert (random > 10 * ppl).all(), (random, ppl)


def read_records(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_the_command_records_and_prints_gen_ppl_and_entropy(monkeypatch, capsys, tmp_path, runs):
    """Samples of 40 characters, longer than the reference's block of 32: scored in windows."""
    out, lm = tmp_path / "measured.jsonl", runs["language_model"]
    args = (f"checkpoint={lm}", f"reference={lm}", "seed=5", "num_samples=3", "length=40", f"out={out}")
    code, stdout, stderr = sample_command(monkeypatch, capsys, tmp_path, *args)
    assert code == 0, stderr
    records = read_records(out)
    model, payload = load_model(best_or_latest(str(lm), "reference"), "reference", ("language_model",), "")
    vocab = Vocabulary.from_dict(payload["vocab"])
    ids = torch.stack([torch.from_numpy(vocab.encode(r["text"]).astype("int64")) for r in records])
    expected = generative_perplexity(model, ids, classes=vocab.classes)
    assert [r["gen_ppl"] for r in records] == pytest.approx(expected.tolist(), rel=1e-5)
    assert all(1 < r["gen_ppl"] < vocab.classes for r in records)
    for record in records:
        assert record["unigram_entropy"] == pytest.approx(unigram_entropy(vocab.encode(record["text"]).tolist()))
        assert f"gen-PPL {record['gen_ppl']:.2f} · entropy {record['unigram_entropy']:.3f}" in stdout
        assert record["reference"] == str(best_or_latest(str(lm), "reference"))
    assert f"reference: {best_or_latest(str(lm), 'reference')}" in stdout  # the file the run folder stood for
    mean_ppl = sum(r["gen_ppl"] for r in records) / 3
    mean_entropy = sum(r["unigram_entropy"] for r in records) / 3
    assert f"mean gen-PPL {mean_ppl:.2f} · mean unigram entropy {mean_entropy:.3f} nats" in stdout


def test_without_a_reference_every_sample_still_has_its_entropy(monkeypatch, capsys, tmp_path, runs):
    out = tmp_path / "plain.jsonl"
    args = (f"checkpoint={runs['unmasking']}", "seed=1", "num_samples=2", "steps=4", f"out={out}")
    code, stdout, stderr = sample_command(monkeypatch, capsys, tmp_path, *args)
    assert code == 0, stderr
    records = read_records(out)
    assert all("gen_ppl" not in r and r["unigram_entropy"] > 0 for r in records)
    assert "gen-PPL" not in stdout and "mean unigram entropy" in stdout


@pytest.mark.parametrize(
    "reference, fragment",
    [
        ("{unmasking}", "is a checkpoint of unmasking training"),
        ("{other_vocabulary}", "trained on another vocabulary than the generator"),
        ("{missing}", "does not exist"),
    ],
)
def test_a_reference_that_is_not_a_language_model_of_the_vocabulary_is_refused(
    monkeypatch, capsys, tmp_path, runs, reference, fragment
):
    lm = best_or_latest(str(runs["language_model"]), "reference")
    other = torch.load(lm, weights_only=True)
    other["vocab"] = Vocabulary(CharTokenizer(tuple("\nabc"))).to_dict()
    torch.save(other, tmp_path / "other.pt")
    paths = {"unmasking": runs["unmasking"], "other_vocabulary": tmp_path / "other.pt", "missing": tmp_path / "no.pt"}
    work = tmp_path / "work"
    work.mkdir()
    args = (f"checkpoint={lm}", f"reference={reference.format(**paths)}", f"out={work / 's.jsonl'}")
    code, stdout, stderr = sample_command(monkeypatch, capsys, work, *args)
    assert_rejected(SimpleNamespace(returncode=code, stdout=stdout, stderr=stderr), "reference", fragment)
    assert list(work.iterdir()) == []  # nothing written


def test_a_run_with_sample_reference_records_gen_ppl_at_each_evaluation(tmp_path, corpus_file, runs):
    reference = runs["language_model"]
    args = tiny_overrides(corpus_file, "mode=unmasking", f"sample.reference={reference}", "max_iters=4")
    train(tmp_path, args)
    samples = read_records(tmp_path / "samples.jsonl")
    assert samples and all(s["gen_ppl"] > 1 and s["unigram_entropy"] >= 0 for s in samples)


def test_sample_reference_is_refused_for_a_classifier_run(monkeypatch, capsys, tmp_path, corpus_file, runs):
    args = tiny_overrides(corpus_file, "mode=token_classification", f"sample.reference={runs['language_model']}")
    result = run_in_process(monkeypatch, capsys, tmp_path, *args, f"hydra.run.dir={tmp_path / 'r'}")
    assert_rejected(result, "sample.reference", "is not read in token_classification")
