"""Corpora at any scale: tokenizers, documents, inputs beyond plain text, sharded preparation and its
cache, and training, resuming and sampling with every tokenizer."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

import trainer.corpus
import trainer.sources
from tests.conftest import assert_rejected, generated_text, run_in_process, tiny_overrides, train
from tests.test_sample import sample_command
from trainer import preparation, shards
from trainer.batches import Stream, WindowStarts, generator_for
from trainer.corpus import CorpusName, DataConfig, document_ends, prepare
from trainer.errors import DataError
from trainer.preparation import MANIFEST
from trainer.vocab import BpeTokenizerConfig, ByteTokenizerConfig, CharTokenizerConfig

TEXT = generated_text(40_000)


def data_config(path, cache, kind=CorpusName.text, **settings) -> DataConfig:
    return DataConfig(name=kind, path=str(path), cache_dir=str(cache), workers=0, **settings)


def write_jsonl(path, texts, key="text"):
    path.write_text("".join(json.dumps({key: text}) + "\n" for text in texts))
    return path


@pytest.fixture
def corpus_txt(tmp_path):
    path = tmp_path / "corpus.txt"
    path.write_text(TEXT)
    return path


def all_ids(corpus) -> np.ndarray:
    return np.concatenate([np.asarray(corpus.split("train")), np.asarray(corpus.split("val"))])


def test_bpe_round_trips_text_exactly(tmp_path, corpus_txt):
    corpus = prepare(data_config(corpus_txt, tmp_path / "cache"), BpeTokenizerConfig(vocab_size=400))
    vocab = corpus.vocab
    assert 257 < vocab.base_size <= 400 and vocab.documents and vocab.eod_id == vocab.base_size
    ids = all_ids(corpus)
    assert ids[-1] == vocab.eod_id and len(ids) < len(TEXT) / 2  # merges: fewer tokens than bytes
    assert vocab.decode(ids[:-1]) == TEXT
    unusual = "Ünïcödé ✓ \t tabs  and  double spaces\n\n\n"
    assert vocab.decode(vocab.encode(unusual)) == unusual


def test_the_same_corpus_and_settings_give_byte_identical_shards(tmp_path, corpus_txt):
    folders = []
    for cache in ("a", "b"):
        corpus = prepare(data_config(corpus_txt, tmp_path / cache), BpeTokenizerConfig(vocab_size=400))
        corpus.save()
        folders.append(corpus.directory)
    assert folders[0].name == folders[1].name  # the same cache key
    for name in ["tokens-00000.bin", MANIFEST]:
        assert (folders[0] / name).read_bytes() == (folders[1] / name).read_bytes()


def test_nothing_is_cached_until_saved_and_a_cache_hit_reads_no_corpus_bytes(tmp_path, corpus_txt, monkeypatch):
    cache = tmp_path / "cache"
    corpus = prepare(data_config(corpus_txt, cache), CharTokenizerConfig())
    assert [p.name for p in cache.iterdir() if not p.name.startswith(".preparing-")] == [
        f".{corpus.directory.name}.lock"
    ]
    corpus.save()
    assert [p.name for p in cache.iterdir()] == [corpus.directory.name]  # the lock is gone with the staging

    def no_reading(*args, **kwargs):
        raise AssertionError("a cache hit read the corpus")

    monkeypatch.setattr(trainer.sources, "read_pieces", no_reading)
    hit = prepare(data_config(corpus_txt, cache), CharTokenizerConfig())
    assert hit.directory == corpus.directory and hit.lock is None
    assert np.array_equal(all_ids(hit), all_ids(corpus))
    with pytest.raises(AssertionError):  # verify=true re-reads the files
        prepare(data_config(corpus_txt, cache, verify=True), CharTokenizerConfig())


def test_a_changed_file_is_prepared_again_and_verify_finds_an_edit_the_key_misses(tmp_path, corpus_txt):
    cache = tmp_path / "cache"
    first = prepare(data_config(corpus_txt, cache), CharTokenizerConfig())
    first.save()
    stat = corpus_txt.stat()
    corpus_txt.write_text(TEXT.replace("king", "kink", 1))  # same size...
    os.utime(corpus_txt, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # ...and modification time
    assert prepare(data_config(corpus_txt, cache), CharTokenizerConfig()).directory == first.directory
    with pytest.raises(DataError, match="data.verify"):
        prepare(data_config(corpus_txt, cache, verify=True), CharTokenizerConfig())
    corpus_txt.write_text(TEXT + "more")
    changed = prepare(data_config(corpus_txt, cache), CharTokenizerConfig())
    assert changed.directory != first.directory


def test_a_char_corpus_of_one_document_keeps_the_ids_of_earlier_runs(tmp_path, corpus_txt):
    corpus = prepare(data_config(corpus_txt, tmp_path), CharTokenizerConfig())
    vocab = corpus.vocab
    assert not vocab.documents and vocab.eod_id is None
    assert (vocab.mask_id, vocab.cls_id, vocab.classes) == (vocab.base_size, vocab.base_size + 1, vocab.base_size)
    assert len(corpus.split("train")) == int(len(TEXT) * 0.9)  # the split of the first format
    assert vocab.decode(all_ids(corpus)) == TEXT


def test_ids_above_65535_are_stored_as_uint32(tmp_path):
    wide = "".join(chr(0x10000 + i) for i in range(70_000)) * 2
    path = tmp_path / "wide.txt"
    path.write_text(wide)
    corpus = prepare(data_config(path, tmp_path / "cache"), CharTokenizerConfig())
    assert corpus.manifest["dtype"] == "uint32" and corpus.vocab.base_size == 70_000
    ids = all_ids(corpus)
    assert ids.dtype == np.uint32 and ids.max() == 69_999 and corpus.vocab.decode(ids[:5]) == wide[:5]
    assert corpus.bytes_per_token("train") == pytest.approx(4.0)  # each character is 4 UTF-8 bytes


def test_documents_end_with_the_end_of_document_id_and_the_last_ones_are_validation(tmp_path):
    texts = [f"document {i} " + "word " * (10 + i) for i in range(20)]
    corpus = prepare(
        data_config(write_jsonl(tmp_path / "d.jsonl", texts), tmp_path, CorpusName.jsonl), ByteTokenizerConfig()
    )
    vocab = corpus.vocab
    train, val = np.asarray(corpus.split("train")), np.asarray(corpus.split("val"))
    assert vocab.eod_id == 256 and train[-1] == val[-1] == vocab.eod_id
    documents = [vocab.decode(part) for part in np.split(train, document_ends(train, 256)[:-1] + 1)]
    assert [d.removesuffix("\n\n") for d in documents] == texts[:18]  # the end of a document shows as a blank line
    assert vocab.decode(val).startswith("document 18 ")  # the last 10% of the documents
    assert corpus.manifest["documents"] == {"train": 18, "val": 2, "test": 0}
    assert corpus.bytes_per_token("val") == pytest.approx(sum(map(len, texts[18:])) / len(val))


def test_windows_within_documents_never_straddle_an_end_of_document(tmp_path):
    texts = ["short"] + ["a longer document of words " * (i + 2) for i in range(40)]
    data = data_config(write_jsonl(tmp_path / "d.jsonl", texts), tmp_path, CorpusName.jsonl, cross_documents=False)
    corpus = prepare(data, ByteTokenizerConfig())
    windows = corpus.windows("train", 48, data)
    batch = windows.sample(256, generator_for(0, Stream.TRAIN, 0)).numpy()
    assert not (batch[:, :-1] == 256).any()  # an end-of-document id only closes a window
    assert not any(b"short" in bytes(row[row < 256].astype(np.uint8)) for row in batch)  # too short: left out
    packed = corpus.windows("train", 48, data_config(tmp_path / "d.jsonl", tmp_path, CorpusName.jsonl))
    assert (packed.sample(256, generator_for(0, Stream.TRAIN, 0)).numpy()[:, :-1] == 256).any()


def test_window_starts_within_documents_cover_exactly_the_fitting_positions():
    ends = np.array([9, 12, 30])  # documents 0..9, 10..12, 13..30, then 31..39 without an end
    starts = WindowStarts.within_documents(40, ends, 5)
    drawn = set(starts.draw(5000, generator_for(0, Stream.TRAIN, 0)).tolist())
    assert drawn == set(range(0, 6)) | set(range(13, 27)) | set(range(31, 36))


def test_cross_documents_false_with_only_short_documents_is_one_data_error(tmp_path):
    data = data_config(
        write_jsonl(tmp_path / "d.jsonl", ["tiny"] * 50), tmp_path, CorpusName.jsonl, cross_documents=False
    )
    corpus = prepare(data, ByteTokenizerConfig())
    with pytest.raises(DataError, match="data.cross_documents"):
        corpus.windows("train", 32, data)


def test_workers_give_the_same_tokens_as_this_process(tmp_path, corpus_txt, monkeypatch):
    monkeypatch.setattr(preparation, "SMALL_CORPUS", 0)  # use the workers even for a small corpus
    monkeypatch.setattr(preparation, "TASK_BYTES", 4096)  # and many tasks
    alone = prepare(data_config(corpus_txt, tmp_path / "a"), BpeTokenizerConfig(vocab_size=300))
    spread = prepare(
        DataConfig(name=CorpusName.text, path=str(corpus_txt), cache_dir=str(tmp_path / "b"), workers=2),
        BpeTokenizerConfig(vocab_size=300),
    )
    assert np.array_equal(all_ids(alone), all_ids(spread))


def test_shards_split_the_stream_and_windows_read_across_them(tmp_path, corpus_txt, monkeypatch):
    whole = all_ids(prepare(data_config(corpus_txt, tmp_path / "a"), CharTokenizerConfig()))
    monkeypatch.setattr(shards, "SHARD_TOKENS", 7_000)
    corpus = prepare(data_config(corpus_txt, tmp_path / "b"), CharTokenizerConfig())
    assert len(corpus.manifest["shards"]) == 6
    assert np.array_equal(all_ids(corpus), whole)
    train = corpus.split("train")
    across = np.arange(6_990, 7_010)
    assert np.array_equal(train[across], whole[across])


def test_parquet_rows_are_documents(tmp_path):
    pyarrow = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    texts = [f"row {i} " + "text " * 30 for i in range(30)]
    pq.write_table(pyarrow.table({"body": texts}), tmp_path / "d.parquet")
    corpus = prepare(
        data_config(tmp_path / "d.parquet", tmp_path, CorpusName.parquet, text_key="body"), ByteTokenizerConfig()
    )
    assert corpus.vocab.decode(np.asarray(corpus.split("val"))).startswith("row 27 ")


def test_a_hugging_face_dataset_saved_on_disk_is_read_offline(tmp_path):
    datasets = pytest.importorskip("datasets")
    texts = [f"line {i} " + "words " * 20 for i in range(30)]
    datasets.Dataset.from_dict({"text": texts}).save_to_disk(tmp_path / "saved")
    data = DataConfig(name=CorpusName.hf, dataset=str(tmp_path / "saved"), cache_dir=str(tmp_path / "c"), workers=0)
    corpus = prepare(data, ByteTokenizerConfig())
    assert corpus.manifest["documents"] == {"train": 27, "val": 3, "test": 0}
    assert corpus.vocab.decode(np.asarray(corpus.split("train"))).startswith("line 0 words")


# -- training, resuming and sampling with other tokenizers ------------------------------------------


@pytest.fixture(scope="module")
def bpe_run(tmp_path_factory, corpus_file):
    """A short unmasking run with a BPE vocabulary, straight through."""
    run_dir = tmp_path_factory.mktemp("bpe")
    args = tiny_overrides(corpus_file, "tokenizer=bpe", "tokenizer.vocab_size=320", "max_iters=8", "eval_interval=4")
    trainer, _ = train(run_dir, args)
    return run_dir, args, trainer


def test_a_bpe_run_resumes_bit_exactly(tmp_path, bpe_run):
    run_dir, args, straight = bpe_run
    resumed, _ = train(tmp_path, [*args, f"resume={run_dir / 'checkpoints' / 'ckpt_0000004.pt'}"])
    final = [torch.load(p / "checkpoints" / "ckpt_0000008.pt", weights_only=True)["model"] for p in (run_dir, tmp_path)]
    assert all(torch.equal(final[0][k], final[1][k]) for k in final[0])
    metrics = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    evaluated = [m for m in metrics if "val/bpb_bound" in m]
    assert evaluated and "val/bpc_bound" not in evaluated[-1]  # bits per byte, not per "character"


def test_a_bpe_run_rolls_back_on_a_fault(tmp_path, corpus_file):
    args = tiny_overrides(
        corpus_file, "tokenizer=bpe", "tokenizer.vocab_size=320", "max_iters=10", "eval_interval=5",
        "stability.inject=[{step: 7, target: params}]", "stability.checks=[loss,grad_norm,params,val]",
    )  # fmt: skip
    trainer, _ = train(tmp_path, args)
    events = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [e["stability/event"] for e in events if "stability/event" in e] == [
        "loss,grad_norm,params: rollback",
        "rollback_done",
    ]
    assert trainer.guard.rollbacks == 1 and trainer.state.step == 10


def test_the_sample_command_uses_the_checkpoints_tokenizer(monkeypatch, capsys, tmp_path, bpe_run):
    run_dir = bpe_run[0]
    out = tmp_path / "s.jsonl"
    args = (f"checkpoint={run_dir / 'checkpoints' / 'best.pt'}", "num_samples=2", "template='the {4} lord'")
    code, _, stderr = sample_command(monkeypatch, capsys, tmp_path, *args, f"out={out}")
    assert code == 0, stderr
    texts = [json.loads(line)["text"] for line in out.read_text().splitlines()]
    assert all(t.startswith("the ") and t.endswith(" lord") for t in texts)
    code, _, stderr = sample_command(monkeypatch, capsys, tmp_path, args[0], "template='the _ lord'")
    assert code == 2 and stderr.startswith("error: template:") and "{n}" in stderr


def test_a_resume_with_another_tokenizer_is_refused_naming_both(tmp_path, monkeypatch, capsys, bpe_run, corpus_file):
    run_dir, args, _ = bpe_run
    checkpoint = run_dir / "checkpoints" / "ckpt_0000004.pt"
    char_args = [a for a in args if not a.startswith("tokenizer")] + ["tokenizer=char"]  # (untyped: the run's own)
    result = run_in_process(
        monkeypatch, capsys, tmp_path, *char_args, f"resume={checkpoint}", f"hydra.run.dir={tmp_path / 'r'}",
        "resume_changes=[tokenizer.name]",
    )  # fmt: skip
    assert_rejected(result, "tokenizer: char", "tokens of its own tokenizer, bpe", "tokenizer=bpe")
    assert not (tmp_path / "r").exists()


def test_a_byte_language_model_trains_samples_and_reports_bits_per_byte(tmp_path, corpus_file):
    args = tiny_overrides(corpus_file, "mode=language_model", "tokenizer=byte", "max_iters=6", "eval_interval=6")
    trainer, printed = train(tmp_path, args)
    record = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()][-1]
    # ASCII: one byte per id, but for the end-of-document id closing the one document
    assert record["val/bpb"] == pytest.approx(record["val/loss"] / np.log(2), rel=1e-3)
    samples = [json.loads(line) for line in (tmp_path / "samples.jsonl").read_text().splitlines()]
    assert samples and all(isinstance(s["text"], str) for s in samples)


# -- bad input: one line, exit code 2, no run folder, the data cache untouched ------------------------


@pytest.fixture(scope="module")
def bad_files(tmp_path_factory) -> dict:
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers

    folder = tmp_path_factory.mktemp("bad")
    rows = [json.dumps({"text": generated_text(3_000, seed=i)}) for i in range(10)]
    (folder / "no_key.jsonl").write_text("\n".join(json.dumps({"body": "x" * 3000}) for _ in range(10)))
    (folder / "broken.jsonl").write_text("\n".join([*rows[:2], "{not json", *rows[2:]]))
    (folder / "short.jsonl").write_text("\n".join(json.dumps({"text": "tiny"}) for _ in range(200)))
    (folder / "corrupt.json").write_text("{ this is not json")
    (folder / "other.json").write_text(json.dumps({"vocab": ["a", "b"]}))
    lossy = Tokenizer(models.WordPiece({"[UNK]": 0, "hello": 1}, unk_token="[UNK]"))
    lossy.normalizer, lossy.pre_tokenizer = normalizers.Lowercase(), pre_tokenizers.Whitespace()
    lossy.save(str(folder / "lossy.json"))
    pyarrow = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    pq.write_table(pyarrow.table({"body": ["x" * 3000] * 10}), folder / "no_column.parquet")
    return {path.stem: str(path) for path in folder.iterdir()}


BAD_CORPUS_INPUTS = [
    (["tokenizer=wordpiece"], ["tokenizer", "wordpiece", "bpe, byte, char, pretrained"]),
    (["tokenizer=bpe", "tokenizer.vocab_size=200"], ["tokenizer.vocab_size", "greater than or equal to 257"]),
    (["tokenizer=bpe", "tokenizer.vocab_size=5000000000"], ["tokenizer.vocab_size", "less than or equal to"]),
    (["tokenizer=pretrained"], ["tokenizer.path", "one of them"]),
    (["tokenizer=pretrained", "tokenizer.path=/no/such/tokenizer.json"], ["tokenizer.path", "does not exist"]),
    (["tokenizer=pretrained", "tokenizer.path={corrupt}"], ["tokenizer.path", "is not a tokenizer.json"]),
    (["tokenizer=pretrained", "tokenizer.path={other}"], ["tokenizer.path", "is not a tokenizer.json"]),
    (["tokenizer=pretrained", "tokenizer.path={lossy}"], ["tokenizer.path", "does not reproduce text exactly"]),
    (["tokenizer=pretrained", "tokenizer.encoding=no_such_encoding"], ["tokenizer.encoding", "not a tiktoken"]),
    (["tokenizer=pretrained", "tokenizer.encoding=gpt2"], ["tokenizer.encoding", "local cache", "TIKTOKEN_CACHE_DIR"]),
    (["data=jsonl", "data.path={no_key}"], ["data.text_key", "line 1", "'body'"]),
    (["data=jsonl", "data.path={broken}"], ["data.path", "broken.jsonl line 3 is not JSON"]),
    (["data=parquet", "data.path={no_column}"], ["data.text_key", "no column 'text'", "body"]),
    (["data=hf"], ["data.dataset", "missing"]),
    (["data=jsonl", "data.path={short}", "data.cross_documents=false"], ["data.cross_documents", "no document"]),
    (["data=jsonl", "data.path={short}", "data.cross_documents=false", "data.paragraph_boundaries=true"], ["one"]),
    (["tokenizer=bpe", "data.paragraph_boundaries=true"], ["data.paragraph_boundaries", "char or byte"]),
    (["tokenizer=bpe", "sample.template='the _ end'"], ["sample.template", "{n} for n tokens"]),
    (["tokenizer=bpe", "sample.template='the {0} end'"], ["sample.template", "{0} fills no token"]),
    (["sample.prompt='\u03a9mega'"], ["sample.prompt", "'\u03a9' not in the model's vocabulary"]),
]


@pytest.mark.parametrize("args,fragments", BAD_CORPUS_INPUTS, ids=[" ".join(a) for a, _ in BAD_CORPUS_INPUTS])
def test_bad_corpus_input_is_one_line_and_writes_nothing(
    tmp_path, data_cache, monkeypatch, capsys, corpus_file, bad_files, args, fragments
):
    cached = {p.name for p in data_cache.iterdir()}
    for name, path in bad_files.items():
        args = [arg.replace("{" + name + "}", path) for arg in args]
    data = [] if any(a.startswith("data=") for a in args) else ["data=text", f"data.path={corpus_file}"]
    overrides = [*tiny_overrides(corpus_file)[2:], *data, *args, f"hydra.run.dir={tmp_path / 'run'}"]
    result = run_in_process(monkeypatch, capsys, tmp_path, *overrides)
    assert_rejected(result, *fragments)
    assert list(tmp_path.iterdir()) == [] and {p.name for p in data_cache.iterdir()} == cached


def test_a_dataset_that_does_not_resolve_offline_is_one_line(tmp_path, corpus_file):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "COLUMNS": "200"}
    args = [*tiny_overrides(corpus_file)[2:], "data=hf", "data.dataset=someone/no_such_dataset"]
    result = subprocess.run(
        [sys.executable, "-m", "trainer", *args, f"hydra.run.dir={tmp_path / 'run'}"],
        capture_output=True, text=True, cwd=tmp_path, env=env, timeout=300,
    )  # fmt: skip
    assert_rejected(result, "data.dataset", "someone/no_such_dataset", "does not load")
    assert list(tmp_path.iterdir()) == []


def test_two_runs_preparing_one_corpus_at_once_share_one_preparation(tmp_path, corpus_txt, monkeypatch):
    import threading

    calls = []
    real = trainer.corpus.write_corpus
    monkeypatch.setattr(trainer.corpus, "write_corpus", lambda *args: calls.append(1) or real(*args))
    results = {}

    def run(name):
        corpus = prepare(data_config(corpus_txt, tmp_path / "cache"), CharTokenizerConfig())
        corpus.save()  # a run keeps its lock until it is accepted; the other waits for it
        results[name] = corpus.directory

    threads = [threading.Thread(target=run, args=(name,)) for name in "ab"]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert len(calls) == 1 and results["a"] == results["b"]


@pytest.mark.parametrize("mode", ["language_model", "token_classification", "sequence_scoring"])
def test_every_mode_trains_with_a_bpe_vocabulary(tmp_path, corpus_file, bpe_run, mode):
    unmasking = bpe_run[0] / "checkpoints" / "best.pt"
    extra = [f"mode.unmasking_checkpoint={unmasking}"] if mode == "sequence_scoring" else []
    args = tiny_overrides(corpus_file, f"mode={mode}", *extra, "tokenizer=bpe", "tokenizer.vocab_size=320")
    trainer, _ = train(tmp_path, args)
    assert trainer.state.step == 4 and torch.isfinite(torch.tensor(trainer.last_eval["val/loss"]))


def test_a_resume_with_another_vocabulary_of_the_same_tokenizer_is_refused_naming_both(
    tmp_path, monkeypatch, capsys, bpe_run
):
    run_dir, args, _ = bpe_run
    checkpoint = run_dir / "checkpoints" / "ckpt_0000004.pt"
    bigger = [a for a in args if not a.startswith("tokenizer.vocab_size")] + ["tokenizer.vocab_size=350"]
    result = run_in_process(
        monkeypatch, capsys, tmp_path, *bigger, f"resume={checkpoint}", f"hydra.run.dir={tmp_path / 'r'}",
        "resume_changes=[tokenizer.vocab_size]",
    )  # fmt: skip
    assert_rejected(result, "resume", "another vocabulary", "bpe (3", "data and tokenizer")
    assert not (tmp_path / "r").exists()
