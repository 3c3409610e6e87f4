"""Sampling: the decoding rules, iterative unmasking, the likelihood bound, `python -m trainer.sample`."""

import json
import math
import pickle
import subprocess
import sys
from contextlib import nullcontext
from types import SimpleNamespace

import pytest
import torch
from hydra.core.override_parser.overrides_parser import OverridesParser

from models import Attention, Head, ModelConfig
from tests.conftest import assert_rejected, command_in_process, run_in_process, tiny_overrides, train
from trainer.checkpoint import best_or_latest, load_model
from trainer.cli import sample as cli
from trainer.cli.preflight import quote_text_values
from trainer.cli.sample_command import score
from trainer.errors import ConfigError
from trainer.objectives.likelihood import masked_counts, nll_bound
from trainer.reporting.console import visible
from trainer.reporting.samples import SAMPLES, Samples
from trainer.sampling.decoding import RowNoise, autoregressive, filtered_logits
from trainer.sampling.generate import canvas, generate
from trainer.sampling.settings import SamplingConfig
from trainer.sampling.unmasking import iterative_unmasking
from trainer.tokenization import CharTokenizer
from trainer.vocab import Vocabulary

VOCAB = Vocabulary(CharTokenizer(tuple("\n !,.:?ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")))


def tiny_model(attention: Attention, block_size: int = 32, seed: int = 0):
    torch.manual_seed(seed)
    small = ModelConfig(n_layer=1, n_head=2, n_embd=16)
    return small.build(VOCAB.size, block_size, attention, Head.lm).eval()


@torch.no_grad()
def test_top_k_1_is_greedy_argmax():
    model = tiny_model(Attention.causal)
    context = torch.tensor([[VOCAB.tokenizer.chars.index("T")], [VOCAB.tokenizer.chars.index("a")]])
    settings = SamplingConfig(top_k=1, temperature=0.7)
    sampled = autoregressive(model, context, 20, VOCAB.base_size, settings, RowNoise(5, 2, torch.device("cpu")))
    greedy = context
    for _ in range(20):
        next_id = model(greedy)[:, -1, : VOCAB.base_size].argmax(-1)
        greedy = torch.cat([greedy, next_id[:, None]], dim=1)
    assert torch.equal(sampled, greedy)


def test_top_p_keeps_the_smallest_set_holding_p():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    kept = filtered_logits(logits, 4, SamplingConfig(top_p=0.8)).isfinite()
    assert kept.tolist() == [[True, True, False, False]]
    assert filtered_logits(logits, 4, SamplingConfig(top_p=0.01)).isfinite().sum() == 1  # the top id stays


def test_specials_are_never_drawn_even_when_the_model_prefers_them():
    logits = torch.zeros(3, VOCAB.size)
    logits[:, VOCAB.mask_id] = logits[:, VOCAB.cls_id] = 50.0
    kept = filtered_logits(logits, VOCAB.base_size, SamplingConfig())
    assert kept.shape[-1] == VOCAB.base_size  # the special ids are not even candidates


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"remasking": "random"},
        {"remasking": "none", "schedule": "cosine"},
        {"randomness": 0.5, "top_p": 0.9},
        {"steps": 4, "schedule": [0.9, 0.5, 0.1]},
        {"steps": 1},
    ],
)
def test_iterative_unmasking_fills_every_position_with_base_ids(options):
    model = tiny_model(Attention.bidirectional)
    settings = SamplingConfig(num_samples=3, **{"steps": 8, **options})
    plan = canvas(settings, VOCAB, 32, unmasking=True)
    ids = generate(model, VOCAB, settings, plan, seed=11)
    assert ids.shape == (3, 32)
    assert ids.lt(VOCAB.base_size).all()  # no mask left, no special id


def test_infill_keeps_every_given_character_and_fills_every_hole():
    model = tiny_model(Attention.bidirectional)
    template = "To be, or __t to b_!\n_"
    settings = SamplingConfig(num_samples=4, prompt="KING:", template=template, steps=6)
    plan = canvas(settings, VOCAB, 32, unmasking=True)
    texts = [VOCAB.decode(row) for row in generate(model, VOCAB, settings, plan, seed=3).tolist()]
    holes = [i for i, ch in enumerate(template) if ch == "_"]
    for text in texts:
        assert text.startswith("KING:") and len(text) == len("KING:") + len(template)
        body = text[len("KING:") :]
        assert all(body[i] == ch for i, ch in enumerate(template) if ch != "_")
        assert all(body[i] in VOCAB.tokenizer.chars for i in holes)


def test_the_schedule_leaves_its_masked_fraction_after_each_step():
    model = tiny_model(Attention.bidirectional)
    settings = SamplingConfig(num_samples=2, steps=4, schedule=[0.75, 0.5, 0.25])
    masked_after_steps = []

    def counting(ids, *args, **kwargs):  # the model sees the canvas of each step
        masked_after_steps.append(int((ids == VOCAB.mask_id).sum(1)[0]))
        return model(ids, *args, **kwargs)

    counting.config = model.config
    ids = torch.zeros(2, 32, dtype=torch.long)
    noise = RowNoise(0, 2, torch.device("cpu"))
    out = iterative_unmasking(
        counting, ids, torch.ones(2, 32, dtype=torch.bool), VOCAB.mask_id, VOCAB.base_size, settings, noise
    )
    assert masked_after_steps == [32, 24, 16, 8]
    assert out.lt(VOCAB.base_size).all()


def test_same_seed_same_samples_and_each_sample_has_its_own_seed():
    model = tiny_model(Attention.bidirectional)
    settings = SamplingConfig(num_samples=3, steps=5, remasking="random")
    plan = canvas(settings, VOCAB, 32, unmasking=True)
    first, again = (generate(model, VOCAB, settings, plan, seed=7) for _ in range(2))
    assert torch.equal(first, again)
    alone = generate(model, VOCAB, SamplingConfig(num_samples=1, steps=5, remasking="random"), plan, seed=8)
    assert torch.equal(alone[0], first[1])  # sample 1 of seed 7 is drawn from seed 8
    assert not torch.equal(first[0], first[1])


def test_a_template_without_holes_is_refused():
    with pytest.raises(ConfigError, match="holds no position to fill"):
        canvas(SamplingConfig(template="no holes"), VOCAB, 64, unmasking=True)


@pytest.mark.parametrize(
    "options, key",
    [
        ({"steps": 4, "schedule": [0.5, 0.2]}, "schedule"),
        ({"steps": 3, "schedule": [0.2, 0.5]}, "schedule"),
        ({"schedule": "exponential"}, "schedule"),
        ({"template": "a_", "length": 4}, "length"),
        ({"randomness": 0.3, "remasking": "random"}, "randomness"),
    ],
)
def test_inconsistent_settings_are_refused(options, key):
    with pytest.raises(ConfigError) as err:
        SamplingConfig(**options)
    assert err.value.key == key


@pytest.mark.parametrize(
    "options, unmasking, key",
    [
        ({"prompt": "é"}, True, "prompt"),
        ({"template": "_" * 40}, True, "template"),
        ({"length": 30, "prompt": "ABCDE"}, True, "length"),
    ],
)
def test_canvas_must_fit_the_model(options, unmasking, key):
    with pytest.raises(ConfigError) as err:
        canvas(SamplingConfig(**options), VOCAB, 32, unmasking)
    assert err.value.key == key


class UniformModel(torch.nn.Module):
    """Logits equal over the base ids, -inf on the special ids."""

    def forward(self, ids, predict_at):
        logits = torch.zeros(len(predict_at), VOCAB.size)
        logits[:, VOCAB.base_size :] = float("-inf")
        return logits


def test_the_bound_of_a_uniform_model_is_ln_m():
    windows = [torch.randint(VOCAB.base_size, (5, 32)), torch.randint(VOCAB.base_size, (3, 32))]
    for draws in (1, 3):
        bound = nll_bound(UniformModel(), windows, VOCAB.mask_id, VOCAB.base_size, draws)
        assert bound.item() == pytest.approx(math.log(VOCAB.base_size), rel=1e-6)


def test_the_bounds_t_values_are_stratified_over_every_masked_count():
    counts = torch.cat([masked_counts(40, start, 80, draw, 2, 32) for draw in range(2) for start in (0, 40)])
    assert counts.min() == 1 and counts.max() == 32
    assert torch.bincount(counts, minlength=33)[1:].tolist() == [5] * 32  # n uniform over 1..T


@pytest.fixture(scope="module")
def unmasking_run(tmp_path_factory, corpus_file):
    run_dir = tmp_path_factory.mktemp("sampled")
    trainer, out = train(
        run_dir, tiny_overrides(corpus_file, "max_iters=60", "eval_interval=30", "sample.num_samples=3")
    )
    return run_dir, trainer, out


def test_a_trained_models_bound_is_below_uniform_and_repeats(unmasking_run):
    run_dir, trainer, _ = unmasking_run
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    evaluations = [r for r in records if "val/nll_bound" in r]
    ln_m = math.log(trainer.files.vocab.base_size)
    assert evaluations[-1]["val/nll_bound"] < ln_m - 0.5
    assert evaluations[-1]["val/bpc_bound"] == pytest.approx(evaluations[-1]["val/nll_bound"] / math.log(2))
    again = trainer.objective.evaluate(trainer.runtime.model, trainer.data.validation_set)
    assert again["nll_bound"] == pytest.approx(evaluations[-1]["val/nll_bound"], rel=1e-6)  # deterministic


def test_samples_are_written_at_every_evaluation_from_the_same_seeds(unmasking_run):
    run_dir, _, out = unmasking_run
    samples = [json.loads(line) for line in (run_dir / "samples.jsonl").read_text().splitlines()]
    assert [(s["step"], s["seed"]) for s in samples] == [(step, i) for step in (0, 30, 60) for i in range(3)]
    assert all(len(s["text"]) == 32 and "_" not in s["text"] for s in samples)
    assert out.count("samples at step") == 3
    assert visible(samples[-1]["text"]) in out  # on one line: a newline shows as a return arrow


def test_a_language_model_reports_bits_per_character(tmp_path, corpus_file):
    trainer, out = train(tmp_path, tiny_overrides(corpus_file, "mode=language_model", "sample.prompt=KING"))
    record = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()][-1]
    assert record["val/bpc"] == pytest.approx(record["val/loss"] / math.log(2))
    samples = [json.loads(line) for line in (tmp_path / "samples.jsonl").read_text().splitlines()]
    assert all(s["text"].startswith("KING") and len(s["text"]) == 32 for s in samples)


def sample_command(monkeypatch, capsys, cwd, *args: str):
    """`python -m trainer.sample ARGS` in this process: (exit code, stdout, stderr)."""
    return command_in_process(monkeypatch, capsys, cwd, cli.main, "trainer.sample", *args)


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory, corpus_file, unmasking_checkpoint) -> dict:
    """Tiny checkpoints of every mode (a few steps: the tests need their kinds, not their skill)."""
    runs = {
        "language_model": ["mode=language_model"],
        "token_classification": ["mode=token_classification"],
        "sequence_scoring": ["mode=sequence_scoring", f"mode.unmasking_checkpoint={unmasking_checkpoint}"],
    }
    paths = {"unmasking": unmasking_checkpoint}
    for mode, overrides in runs.items():
        run_dir = tmp_path_factory.mktemp(mode)
        train(run_dir, tiny_overrides(corpus_file, *overrides))
        paths[mode] = best_or_latest(str(run_dir), mode)
    return paths


def test_the_command_prints_and_writes_samples_with_their_seeds(monkeypatch, capsys, tmp_path, checkpoints):
    out = tmp_path / "samples.jsonl"
    args = (f"checkpoint={checkpoints['language_model']}", "seed=40", "num_samples=3", "length=12", "prompt=KING")
    code, stdout, stderr = sample_command(monkeypatch, capsys, tmp_path, *args, f"out={out}")
    assert code == 0, stderr
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["seed"] for r in records] == [40, 41, 42]
    assert all(r["text"].startswith("KING") and len(r["text"]) == 16 for r in records)
    assert records[0]["settings"]["prompt"] == "KING" and records[0]["mode"] == "language_model"
    assert all(r["text"] in stdout and f"seed {r['seed']}" in stdout for r in records)
    first = out.read_text()
    assert sample_command(monkeypatch, capsys, tmp_path, *args, f"out={out}")[0] == 0
    assert out.read_text() == first  # the same seed, the same samples


def test_a_run_folder_samples_its_best_checkpoint_by_infill(monkeypatch, capsys, tmp_path, checkpoints):
    run_folder, out, template = (
        checkpoints["unmasking"].parent.parent,
        tmp_path / "infill.jsonl",
        "the k__g and __e queen",
    )
    args = (f"checkpoint={run_folder}", f"template={template}", "seed=1", f"out={out}")
    code, stdout, stderr = sample_command(monkeypatch, capsys, tmp_path, *args)
    assert code == 0, stderr
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(records) == 4 and all(r["checkpoint"] == str(checkpoints["unmasking"]) for r in records)
    for record in records:
        text = record["text"]
        assert len(text) == len(template) and text in stdout
        assert all(text[i] == ch for i, ch in enumerate(template) if ch != "_")
        assert "_" not in text


def test_the_ranker_orders_samples_by_its_score(monkeypatch, capsys, tmp_path, checkpoints):
    out = tmp_path / "ranked.jsonl"
    code, stdout, stderr = sample_command(
        monkeypatch,
        capsys,
        tmp_path,
        f"checkpoint={checkpoints['unmasking']}",
        f"ranker={checkpoints['sequence_scoring']}",
        f"judge={checkpoints['token_classification']}",
        "length=24",
        "num_samples=6",
        "seed=2",
        f"out={out}",
    )
    assert code == 0, stderr
    records = [json.loads(line) for line in out.read_text().splitlines()]
    scores = [r["score"] for r in records]
    assert scores == sorted(scores) and len(set(scores)) > 1
    ranker, payload = load_model(checkpoints["sequence_scoring"], "ranker", ("sequence_scoring",), "")
    vocab = Vocabulary.from_dict(payload["vocab"])
    ids = torch.stack([torch.from_numpy(vocab.encode(r["text"]).astype("int64")) for r in records])
    assert score(ranker, ids, vocab, nullcontext()) == pytest.approx(scores, abs=1e-5)


@pytest.mark.parametrize(
    "args, key",
    [
        (["checkpoint={sequence_scoring}"], "checkpoint"),
        (["checkpoint={token_classification}"], "checkpoint"),
        (["checkpoint={unmasking}", "judge={language_model}"], "judge"),
        (["checkpoint={unmasking}", "ranker={token_classification}", "length=20"], "ranker"),
        (["checkpoint={language_model}", "judge={token_classification}"], "judge"),
        (["checkpoint={language_model}", "steps=10"], "steps"),
        (["checkpoint={unmasking}", "ranker={sequence_scoring}"], "ranker"),  # 32 characters, its windows hold 31
        (["checkpoint={unmasking}", "judge={token_classification}", "remasking=random"], "judge"),
        (["checkpoint={unmasking}", "prompt=ü"], "prompt"),
        (["checkpoint=/no/such.pt"], "checkpoint"),
        ([], "checkpoint"),
        (["checkpoint={unmasking}", "temprature=2"], "temprature"),
        (["checkpoint={unmasking}", "top_p=0"], "top_p"),
        (["checkpoint={unmasking}", "out={folder}"], "out"),
        (["-m", "checkpoint={unmasking}", "seed=1,2"], "--multirun"),
        (["checkpoint={unmasking}", "out={unmasking}"], "out"),  # the checkpoint it reads
        (["checkpoint={unmasking}", "out={folder}/run/checkpoints/s.jsonl"], "out"),
        (["checkpoint={unmasking}", "out={folder}/s.pt"], "out"),
        (["checkpoint={unmasking}", "hydra.run.dir={folder}/x"], "hydra.run.dir"),
        (["checkpoint={unmasking}", "mode=unmasking"], "mode"),
        (["checkpoint={no_vocab}"], "checkpoint"),
        (["checkpoint={language_model}", "length=100001"], "length"),
    ],
)
def test_bad_input_is_one_line_and_writes_nothing(monkeypatch, capsys, tmp_path, checkpoints, args, key):
    work = tmp_path / "work"
    (work / "run" / "checkpoints").mkdir(parents=True)
    no_vocab = torch.load(checkpoints["unmasking"], weights_only=True)
    del no_vocab["vocab"]
    torch.save(no_vocab, tmp_path / "no_vocab.pt")
    paths = {mode: str(path) for mode, path in checkpoints.items()}
    paths.update(folder=str(work), no_vocab=str(tmp_path / "no_vocab.pt"))
    before = {path: path.stat().st_mtime_ns for path in checkpoints.values()}
    code, stdout, stderr = sample_command(monkeypatch, capsys, work, *(a.format(**paths) for a in args))
    result = type("Result", (), {"returncode": code, "stderr": stderr, "stdout": stdout})
    assert_rejected(result, key)
    assert sorted(p.name for p in work.rglob("*")) == ["checkpoints", "run"]  # nothing written
    assert {path: path.stat().st_mtime_ns for path in checkpoints.values()} == before


def samples_of(run_dir) -> list[dict]:
    return [json.loads(line) for line in (run_dir / SAMPLES).read_text().splitlines()]


def test_the_classifiers_show_their_predictions_on_validation_rows(checkpoints):
    classifier = samples_of(checkpoints["token_classification"].parent.parent)
    assert [s["step"] for s in classifier] == [0, 0, 4, 4]
    for record in classifier:
        assert len(record["text"]) == 32 and set(record["replaced"] + record["predicted"]) <= {" ", "^"}
    assert classifier[0]["replaced"] == classifier[2]["replaced"]  # the same rows at every evaluation
    scorer = samples_of(checkpoints["sequence_scoring"].parent.parent)
    for record in scorer:
        assert len(record["text"]) == 31 and 0 <= record["score"] <= 1
        assert record["regenerated"] == pytest.approx(record["filled"].count("^") / 31)


def test_sampling_leaves_training_exactly_as_it_was(tmp_path, corpus_file):
    losses = []
    for count in (0, 2):
        trainer, _ = train(tmp_path / str(count), tiny_overrides(corpus_file, f"sample.num_samples={count}"))
        losses.append(trainer.last_eval)
    assert losses[0] == losses[1]
    assert not (tmp_path / "0" / SAMPLES).exists() and (tmp_path / "2" / SAMPLES).exists()


def test_a_resume_drops_the_samples_written_after_its_checkpoint(tmp_path):
    log = Samples(lambda model, validation_set: [], tmp_path)
    log.path.write_text("".join(json.dumps({"step": step, "text": "x"}) + "\n" for step in (0, 30, 60)) + '{"ste')
    resumed = SimpleNamespace(state=SimpleNamespace(step=30), files=SimpleNamespace(resumed_from=tmp_path / "c.pt"))
    log.on_train_start(resumed)
    assert [s["step"] for s in samples_of(tmp_path)] == [0, 30]


@pytest.mark.parametrize(
    "override, key",
    [
        (["mode=language_model", "sample.steps=8"], "sample.steps"),
        (["mode=token_classification", "sample.temperature=0.5"], "sample.temperature"),
        (["sample.prompt=\u00e9"], "sample.prompt"),
        (["sample.template=the ___", "sample.length=3"], "sample.length"),
        (["sample.schedule=[0.5]"], "sample.schedule"),
    ],
)
def test_a_run_refuses_sample_settings_it_would_not_read(monkeypatch, capsys, tmp_path, corpus_file, override, key):
    result = run_in_process(monkeypatch, capsys, tmp_path, *tiny_overrides(corpus_file, *override))
    assert_rejected(result, key)
    assert list(tmp_path.iterdir()) == []


def test_wandb_keeps_each_evaluations_samples_as_a_table(tmp_path, corpus_file):
    train(tmp_path, tiny_overrides(corpus_file, "logger=[console,jsonl,wandb]"))
    tables = sorted((tmp_path / "wandb").glob("offline-run-*/files/media/table/samples_*.table.json"))
    logged = [json.loads(path.read_text()) for path in tables]
    assert [t["columns"][:4] for t in logged] == [["step", "sample", "seed", "text"]] * 2
    rows = sorted((row[0], row[1], row[3]) for table in logged for row in table["data"])
    assert rows == sorted((s["step"], s["sample"], s["text"]) for s in samples_of(tmp_path))


def test_prompts_and_templates_are_taken_as_typed(monkeypatch, capsys, tmp_path, checkpoints):
    """Hydra's grammar would read 1_2 as the number 12 and a comma as a sweep; \\n is a newline."""
    out = tmp_path / "typed.jsonl"
    args = (f"checkpoint={checkpoints['unmasking']}", "prompt=the, ", "template=a\\nd_ c_", f"out={out}", "seed=4")
    code, _, stderr = sample_command(monkeypatch, capsys, tmp_path, *args)
    assert code == 0, stderr
    for record in (json.loads(line) for line in out.read_text().splitlines()):
        text = record["text"]
        assert text.startswith("the, a\nd") and text[9] == " " and text[10] == "c" and len(text) == 12
        assert record["settings"]["length"] == 2  # the positions generated


@pytest.mark.parametrize("value", ["1_2", "a, b", "h\u00e9llo", "it's", "end\\", "x\\'y", ""])
def test_text_values_reach_the_config_as_typed(value):
    (override,) = quote_text_values([f"prompt={value}"], ("prompt",))
    assert OverridesParser.create().parse_override(override).value() == value


def test_a_tiny_temperature_is_greedy():
    model = tiny_model(Attention.causal)
    context = torch.tensor([[VOCAB.tokenizer.chars.index("T")]])
    noise = lambda: RowNoise(0, 1, torch.device("cpu"))  # noqa: E731
    cold = autoregressive(model, context, 12, VOCAB.base_size, SamplingConfig(temperature=1e-45), noise())
    greedy = autoregressive(model, context, 12, VOCAB.base_size, SamplingConfig(top_k=1), noise())
    assert torch.equal(cold, greedy)


def test_a_classifier_shows_at_most_its_validation_rows(monkeypatch, capsys, tmp_path, corpus_file):
    args = tiny_overrides(corpus_file, "mode=token_classification", "sample.num_samples=17")  # 2 x 8 rows
    assert_rejected(run_in_process(monkeypatch, capsys, tmp_path, *args), "sample.num_samples", "[0, 16]")


def test_a_runs_prompt_is_taken_as_typed(monkeypatch, capsys, tmp_path, corpus_file):
    args = tiny_overrides(corpus_file, "mode=language_model", "sample.prompt=the, king", "run_name=typed")
    result = run_in_process(monkeypatch, capsys, tmp_path, *args)
    assert result.returncode == 0, result.stderr
    texts = [record["text"] for record in samples_of(tmp_path / "outputs" / "typed")]
    assert len(texts) == 4 and all(text.startswith("the, king") for text in texts)


def test_a_raw_pickle_is_one_line_without_torchs_warning(tmp_path):
    """torch warns about a foreign pickle's protocol before it fails: the user sees our line alone."""
    raw = tmp_path / "raw.pkl"
    raw.write_bytes(pickle.dumps({"weights": [1, 2]}, protocol=4))
    command = [sys.executable, "-m", "trainer.sample", f"checkpoint={raw}"]
    result = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert_rejected(result, "checkpoint", f"{raw} is not a readable checkpoint")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["raw.pkl"]  # nothing written
