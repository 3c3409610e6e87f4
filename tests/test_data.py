"""Vocabulary, corpus preparation, window sampling and the background batch stream."""

import numpy as np
import pytest
import torch

from tests.conftest import generated_text
from trainer.batches import BatchStream, Stream, TokenWindows, WindowStarts, generator_for
from trainer.corpus import CorpusName, DataConfig, prepare
from trainer.errors import DataError
from trainer.named_corpora import shakespeare_plays, strip_markdown
from trainer.schedule import learning_rate
from trainer.sources import TextSource
from trainer.vocab import RESERVED_IDS, CharTokenizerConfig, Vocabulary


def test_special_ids_follow_the_base_characters():
    vocab = Vocabulary.from_text("hello world\n")
    assert vocab.base_size == 9
    assert (vocab.mask_id, vocab.cls_id, vocab.size) == (9, 10, 9 + RESERVED_IDS)
    ids = vocab.encode("hello\n")
    assert vocab.token_dtype == np.uint16 and vocab.decode(ids) == "hello\n"
    assert vocab.decode([*ids[:2], vocab.mask_id]) == "he_"
    assert Vocabulary.from_dict(vocab.to_dict()) == vocab


def test_a_vocabulary_of_the_first_format_reads_as_char_without_documents():
    legacy = {"chars": ["\n", " ", "a"], "base_size": 3, "size": 18, "mask_id": 3, "cls_id": 4}
    vocab = Vocabulary.from_dict(legacy)
    assert (vocab.kind, vocab.documents, vocab.mask_id, vocab.cls_id) == ("char", False, 3, 4)


def test_strip_markdown_gives_plain_play_text():
    md = "# Hamlet\n\n## ACT I\n\n**BERNARDO**  \nWho's there?\n\n_Enter HORATIO_\n\n__\\[Awaking]_  \n\\--odours\n"
    assert strip_markdown(md) == "Hamlet\n\nACT I\n\nBERNARDO:\nWho's there?\n\nEnter HORATIO\n\n[Awaking]\n--odours\n"


def test_builtin_corpus_is_shakespeare_without_markup():
    text = shakespeare_plays()
    assert len(text) > 4_000_000
    assert "HAMLET:\n" in text and "To be, or not to be" in text
    assert not set("*#\\") & set(text)


def text_of(path) -> list[str]:
    """The documents of data=text at `path`."""
    return ["".join(document) for document in TextSource(str(path)).documents()]


def test_prepare_splits_and_caches(tmp_path):
    text = generated_text(10_000)
    (tmp_path / "c.txt").write_text(text)
    data = DataConfig(name=CorpusName.text, path=str(tmp_path / "c.txt"), cache_dir=str(tmp_path / "cache"))
    corpus = prepare(data, CharTokenizerConfig())
    assert [p.name for p in (tmp_path / "cache").iterdir() if p.name.startswith(corpus.directory.name)] == []
    corpus.save()  # nothing is cached until the run is accepted
    train, val = corpus.split("train"), corpus.split("val")
    assert (len(train), len(val)) == (9_000, 1_000)
    assert corpus.vocab.decode(np.concatenate([train, val])) == text
    mtime = (corpus.directory / "manifest.json").stat().st_mtime_ns
    assert prepare(data, CharTokenizerConfig()).directory == corpus.directory
    assert (corpus.directory / "manifest.json").stat().st_mtime_ns == mtime


def test_each_file_of_a_folder_is_a_document(tmp_path):
    (tmp_path / "b.txt").write_text("second")
    (tmp_path / "a.txt").write_text("first")
    assert text_of(tmp_path) == ["first", "second"]


def test_hidden_files_and_folders_and_byte_order_marks_are_not_text(tmp_path):
    (tmp_path / "a.txt").write_bytes("\ufefffirst".encode())  # a UTF-8 byte-order mark
    (tmp_path / ".notes.txt").write_text("hidden")
    for hidden in (".git", ".ipynb_checkpoints"):
        (tmp_path / hidden).mkdir()
        (tmp_path / hidden / "b.txt").write_text("hidden")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "c.txt").write_text("third")
    assert text_of(tmp_path) == ["first", "third"]


def test_non_utf8_file_is_a_data_error_naming_the_file(tmp_path):
    (tmp_path / "good.txt").write_text("fine")
    (tmp_path / "bad.txt").write_bytes(b"\xff\xfe\xfa")
    with pytest.raises(DataError, match="data.path") as err:
        text_of(tmp_path)
    assert "bad.txt" in str(err.value)


def test_windows_are_seeded_slices_of_the_split():
    tokens = np.arange(1000, dtype=np.uint16)
    windows = TokenWindows(tokens, 16)
    a = windows.sample(8, generator_for(1, Stream.TRAIN, step=5))
    b = windows.sample(8, generator_for(1, Stream.TRAIN, step=5))
    c = windows.sample(8, generator_for(1, Stream.TRAIN, step=6))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert torch.equal(a - a[:, :1], torch.arange(16).expand(8, 16))  # contiguous windows


def test_paragraph_boundaries_start_at_double_newlines():
    text = generated_text(5_000)
    vocab = Vocabulary.from_text(text)
    tokens = vocab.encode(text)
    windows = TokenWindows(tokens, 20, WindowStarts.after_blank_lines(tokens, 20, vocab.tokenizer.chars.index("\n")))
    batch = windows.sample(32, generator_for(0, Stream.TRAIN, 0))
    assert all(vocab.decode(row[:2]) == "\n\n" for row in batch)


def test_stream_yields_the_same_batches_as_direct_builds():
    windows = TokenWindows(np.arange(5000, dtype=np.uint16), 8)

    def make(g, stage=0, step=0):
        return windows.sample(4, g)

    stream = BatchStream(make, seed=3, micro_steps=2, depth=3)
    got = [stream.get(step, micro) for step in range(4) for micro in range(2)]
    jumped = stream.get(10, 1)  # a resume or rollback jumps; the producer restarts there
    stream.close()
    expected = [make(generator_for(3, Stream.TRAIN, s, m)) for s in range(4) for m in range(2)]
    assert all(torch.equal(a, b) for a, b in zip(got, expected))
    assert torch.equal(jumped, make(generator_for(3, Stream.TRAIN, 10, 1)))


def test_stream_reports_producer_errors():
    def broken(generator, stage, step):
        raise RuntimeError("disk gone")

    stream = BatchStream(broken, seed=0, micro_steps=1, depth=2)
    with pytest.raises(RuntimeError, match="disk gone"):
        stream.get(0, 0)
    stream.close()


def test_learning_rate_warmup_then_cosine_to_min():
    def lr(step):
        return learning_rate(step, lr=1e-3, min_lr=1e-4, warmup_iters=100, decay_iters=2000)

    assert lr(0) == pytest.approx(1e-3 / 101)
    assert lr(99) == pytest.approx(1e-3 * 100 / 101)
    assert lr(100) == pytest.approx(1e-3)
    assert lr(1050) == pytest.approx(5.5e-4)
    assert lr(2000) == lr(5000) == pytest.approx(1e-4)
    assert learning_rate(500, lr=1e-3, min_lr=1e-4, warmup_iters=10, decay_iters=2000, schedule="constant") == 1e-3
