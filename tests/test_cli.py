"""The command line as a user meets it: `python -m trainer ...` in a subprocess."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
import torch

from tests.conftest import TINY_RUN, assert_rejected, generated_text, run_cli, run_in_process, tiny_overrides, train
from trainer.errors import ConfigError


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, corpus_file):
    run_dir = tmp_path_factory.mktemp("finished")
    train(run_dir, tiny_overrides(corpus_file, "max_iters=4", "eval_interval=4"))
    return run_dir


# One row per mistaken command: the arguments and what the one error line must name.
BAD_INPUTS = [
    # non-finite numbers where a finite one is meant
    (["optim.lr=inf"], ["optim.lr", "finite"]),
    (["optim.lr=nan"], ["optim.lr", "finite"]),
    (["optim.min_lr=nan"], ["optim.min_lr", "finite"]),
    (["optim.weight_decay=inf"], ["optim.weight_decay"]),
    (["optim.grad_clip=nan"], ["optim.grad_clip"]),
    (["model.dropout=nan"], ["model.dropout"]),
    (["model.rope_base=inf"], ["model.rope_base"]),
    (["system.peak_flops=inf"], ["system.peak_flops"]),
    (["data.val_fraction=nan"], ["data.val_fraction"]),
    (["stability.lr_backoff=nan"], ["stability.lr_backoff"]),
    (["masking=sticky", "masking.p2_probability=nan"], ["masking.p2_probability"]),
    (["mode=token_classification", "mode.rate_max=inf"], ["mode.rate_max"]),
    # model shape
    (["model.n_layer=0"], ["model.n_layer", "greater than or equal to 1"]),
    (["model.n_head=0"], ["model.n_head"]),
    (["model.n_head=3"], ["model.n_head", "divisor"]),
    (["model.n_head=64"], ["model.n_head", "even head size"]),
    (["model.n_embd=0"], ["model.n_embd"]),
    (["model.rope_base=0"], ["model.rope_base", "greater than 0"]),
    (["model.dropout=1.0"], ["model.dropout", "less than 1"]),
    (["model.dropout=-0.1"], ["model.dropout"]),
    (["model.positions=absolute"], ["model.positions", "rope"]),
    # optimizer
    (["optim.lr=0"], ["optim.lr", "greater than 0"]),
    (["optim.lr=-1"], ["optim.lr"]),
    (["optim.min_lr=-0.1"], ["optim.min_lr"]),
    (["optim.min_lr=1.0"], ["optim.min_lr", "optim.lr"]),
    (["optim.betas=[0.9]"], ["optim.betas", "2 items"]),
    (["optim.betas=[0.9,1.0]"], ["optim.betas[1]", "less than 1"]),
    (["optim.betas=[-0.1,0.9]"], ["optim.betas[0]"]),
    (["optim.weight_decay=-1"], ["optim.weight_decay"]),
    (["optim.warmup_iters=-1"], ["optim.warmup_iters"]),
    (["optim.lr_decay_iters=2"], ["optim.lr_decay_iters", "warmup"]),
    (["optim.schedule=linear"], ["optim.schedule", "cosine"]),
    # masking and stages that could not train
    (["masking=span", "masking.spans_count=0"], ["masking.spans_count", "masks no position"]),
    (["masking=random", "masking.max_masked_ratio=0"], ["masking.max_masked_ratio", "masks no position"]),
    (["masking=sticky", "masking.target_masked_ratio=0"], ["masking.target_masked_ratio", "masks no position"]),
    (["masking=sticky", "masking.p1_probability=0"], ["masking.p1_probability", "(0, 1]"]),
    (["masking=sticky", "masking.target_masked_ratio=1.5"], ["masking.target_masked_ratio"]),
    (["masking=random", "masking.max_masked_ratio=-0.1"], ["masking.max_masked_ratio"]),
    (["masking=sticky", "masking.corruption.random_prob=0.5"], ["masking.corruption.random_prob", "mask_prob"]),
    (["masking=span", "masking.corruption.mask_prob=0.5"], ["masking.corruption"]),
    (["stages.validation=[]"], ["stages.validation", "empty"]),
    (["stages.train=[]"], ["stages.train", "empty"]),
    (["stages.train.0.type=zigzag"], ["stages.train[0].type", "sticky"]),
    (["stages.train.1.p1_probability=0"], ["stages.train[1].p1_probability"]),
    (["stages.train.0.val_loss_stale_count=0"], ["stages.train[0].val_loss_stale_count"]),
    (["stages.train.2.p2_probability=2"], ["stages.train[2].p2_probability", "less than or equal to 1"]),
    (["stages=canonical14", "stages.mix=all", "batch_size=3"], ["batch_size", "14 stages"]),
    (["masking=zigzag"], ["masking", "'zigzag'", "sticky"]),
    (["stages=nope"], ["stages", "easy_to_hard"]),
    # plain numbers and names
    (["seed=-1"], ["seed"]),
    (["max_iters=-1"], ["max_iters"]),
    (["eval_interval=0"], ["eval_interval"]),
    (["eval_iters=0"], ["eval_iters"]),
    (["log_interval=0"], ["log_interval"]),
    (["batch_size=0"], ["batch_size"]),
    (["block_size=0"], ["block_size"]),
    (["gradient_accumulation_steps=0"], ["gradient_accumulation_steps"]),
    (["system.threads=0"], ["system.threads"]),
    (["system.peak_flops=0"], ["system.peak_flops"]),
    (["data.val_fraction=0"], ["data.val_fraction"]),
    (["data.val_fraction=1"], ["data.val_fraction"]),
    (["data.prefetch=0"], ["data.prefetch"]),
    (["checkpoint.keep_last=0"], ["checkpoint.keep_last"]),
    (["run_name=a/b"], ["run_name", "plain name"]),
    (["run_name=''"], ["run_name", "plain name"]),
    (["logger.jsonl.filename=../metrics.jsonl"], ["logger.jsonl.filename", "plain name"]),
    (["logger.jsonl.filename=sub/m.jsonl"], ["logger.jsonl.filename"]),
    # keys that do not exist, or belong to another option
    (["optim.lerning_rate=0.1"], ["optim.lerning_rate", "lr"]),
    (["batch_sise=4"], ["batch_sise", "batch_size"]),
    (["mode=language_model", "mode.fill=sample"], ["mode.fill"]),
    (["+mode.foo=1"], ["mode.foo", "no such key"]),
    (["++optim.foo=1"], ["optim.foo", "no such key"]),
    (["+model.n_kv_head=2"], ["model.n_kv_head", "no such key"]),
    (["mode=foo"], ["mode", "'foo'", "language_model", "unmasking"]),
    # settings that would silently do nothing
    (["transfer.checkpoint=x.pt"], ["transfer.checkpoint", "transfer=none"]),
    (["stability.inject=[{step: 100, target: loss}]"], ["stability.inject[0].step", "never reached"]),
    (["mode=language_model", "masking=sticky"], ["masking", "language_model"]),
    (["mode=language_model", "stages=canonical14"], ["stages", "language_model"]),
    (["masking=sticky", "stages=canonical14"], ["masking", "stages=single"]),
    (["mode=token_classification", "mode.unmasking_checkpoint=x.pt"], ["mode.unmasking_checkpoint", "source"]),
    (
        ["mode=token_classification", "transfer=two_stage", f"transfer.checkpoint={__file__}"],
        ["transfer.unfreeze_at_iteration", "never reached"],
    ),
    (["masking.target_masked_ratio=0.3"], ["masking.target_masked_ratio", "no masking is chosen"]),
    (["mode=language_model", "stages.mix=all"], ["stages.mix", "no stages is chosen"]),
    (["stages.train.0.corruption.mask_prob=0.5"], ["stages.train.0.corruption.mask_prob", "+stages.train"]),
    (["+stages.train.0.corruption.mask_prob=2"], ["stages.train[0].corruption.mask_prob"]),
    # what Hydra itself reports
    (["~mode"], ["mode", "cannot be removed"]),
    (["stability.inject=[{target: loss}]"], ["stability.inject[0].step", "missing"]),
    (["data.path=a=b"], ["data.path", "quote"]),
    # combinations, data and checkpoints
    (["mode=sequence_scoring"], ["mode.unmasking_checkpoint", "missing"]),
    (["mode=token_classification", "mode.rate_min=0"], ["mode.rate_min"]),
    (["mode=token_classification", "mode.rate_max=0.01"], ["mode.rate_max", "mode.rate_min"]),
    (["mode=token_classification", "mode.source=model"], ["mode.unmasking_checkpoint", "missing"]),
    (["transfer=fine_tuning"], ["transfer.checkpoint", "missing"]),
    (["transfer=feature_extraction", f"transfer.checkpoint={__file__}"], ["transfer", "nothing would train"]),
    (["transfer=fine_tuning", "transfer.checkpoint=/no/such.pt"], ["transfer.checkpoint", "does not exist"]),
    (["transfer=fine_tuning", "transfer.checkpoint=/"], ["transfer.checkpoint", "holds no checkpoint"]),
    (["mode=sequence_scoring", "mode.unmasking_checkpoint=/no/such.pt"], ["mode.unmasking_checkpoint", "not exist"]),
    (["mode=token_classification", "mode.fill=argmax"], ["mode.fill", "source=random"]),
    (["resume=/"], ["resume", "holds no checkpoint"]),
    (["batch_size=9999999999999999999999"], ["batch_size", "less than or equal to"]),
    (["masking=sticky,random"], ["masking", "--multirun"]),
    (["-m", "masking=sticky", "seed=range(3,0)"], ["--multirun", "no job"]),
    (["--cfg", "jobs"], ["--cfg", "invalid choice"]),
    (["-m", "--cfg", "job"], ["--multirun and --cfg"]),
    (["batch_size=abc"], ["batch_size", "an integer"]),
    (["system.compile=maybe"], ["system.compile", "true or false"]),
    (["optim.betas=0.9"], ["optim.betas", "a list"]),
    (["resume=null"], ["resume", "cannot be null"]),
    (["+model.n_layer=3"], ["model.n_layer", "already in the config"]),
    (["~model"], ["model", "cannot be removed"]),
    (["~optim.lr"], ["optim.lr", "cannot be removed"]),
    (["data.cache_dir=''"], ["data.cache_dir", "empty"]),
    (["stages=single"], ["masking", "none is chosen"]),
    (["data=text"], ["data.path", "missing"]),
    (["data=text", "data.path=/no/such/file.txt"], ["data.path", "does not exist"]),
    (["data.path=/tmp"], ["data.path", "data=text"]),
    (["resume=/no/such/ckpt.pt"], ["resume", "does not exist"]),
    (["eval_only=true"], ["eval_only", "resume=auto"]),
    # loggers
    (["logger=[console,plot]"], ["logger", "jsonl is not chosen"]),
    (["logger=[console,jsonl,wandb]", "logger.wandb.project=a/b"], ["logger.wandb.project"]),
    (["logger=[console,jsonl,wandb]", "logger.wandb.mode=loud"], ["logger.wandb.mode", "offline"]),
    (["logger=[console,nonsense]"], ["logger", "'nonsense' is not an option", "console, jsonl, plot, wandb"]),
    (["logger.wandb.mode=offline"], ["logger.wandb.mode", "logger=[..., wandb]"]),
    (["logger=[console,jsonl,plot]", "logger.plot.filename=curves.jpg"], ["logger.plot.filename", ".png"]),
    (["loss.reduction=tokens"], ["loss.reduction", "[token, sample]"]),
    # the loss group
    (["loss=bogus"], ["loss", "plain, reference"]),
    (["loss.label_smoothing=1"], ["loss.label_smoothing", "less than 1"]),
    (["loss.label_smoothing=-0.1"], ["loss.label_smoothing"]),
    (["loss.label_smoothing=nan"], ["loss.label_smoothing", "finite"]),
    (["loss.reduction=mean"], ["loss.reduction", "token", "sample"]),
    (["loss.entropy_penalty.max=-1"], ["loss.entropy_penalty.max", "greater than or equal to 0"]),
    (["loss.entropy_penalty.max=0.5", "loss.entropy_penalty.start_iter=4"], ["start_iter", "never reached"]),
    (["loss=reference"], ["loss.entropy_penalty.start_iter", "6000", "never reached"]),
    (["mode=language_model", "loss.weight_by_mask_ratio=true"], ["loss.weight_by_mask_ratio", "no mask ratio"]),
    (["loss.weight_by_mask_ratio=yes please"], ["loss.weight_by_mask_ratio"]),
    (["loss.entropy_penalty.start_iter=2"], ["loss.entropy_penalty.start_iter", "no effect"]),
    (["loss.entropy_penalty.max=0.5", "loss.entropy_penalty.end_iter=0"], ["loss.entropy_penalty.end_iter"]),
    (["resume_changes=[optim.lr]"], ["resume_changes", "resume=none"]),
    (["resume=auto", "resume_changes=[optim.lrr]"], ["resume_changes[0]", "optim.lrr"]),
    (["loss=null"], ["loss", "null"]),
    (["mode=null"], ["mode", "null"]),
    # Hydra's own messages, translated: the options of an empty group, + on a chosen group, unquoted characters
    (["mode="], ["mode", "no option given", "language_model, sequence_scoring"]),
    (["+experiment=shakespeare_lm_cpu"], ["experiment", "already chosen", "experiment=shakespeare_lm_cpu"]),
    (
        ["run_name=r\u00e9sum\u00e9_\u5b9e\u9a8c"],
        ["run_name", "stopped at '\u00e9'", 'run_name="r\u00e9sum\u00e9_\u5b9e\u9a8c"'],
    ),
    (["data.path=~/c.txt"], ["data.path", "stopped at '~'", 'data.path="~/c.txt"']),
    (["loss=[plain,reference]"], ["loss", "one option"]),
    (
        ["stability.inject=[{step:1,target:loss,kind:nan},{step:1,target:loss,kind:nan,bogus:1}]"],
        ["stability.inject[1].bogus", "no such key", "repeat"],
    ),
    (["eval_only=true", "resume=auto"], ["eval_only", "holds no checkpoint"]),
    (["eval_only=maybe"], ["eval_only", "bool"]),
    (["system.device=cuda"] if not torch.cuda.is_available() else ["system.device=tpu"], ["system.device"]),
]


def cache_entries(data_cache) -> set:
    return {p.name for p in data_cache.iterdir()} if data_cache.exists() else set()


@pytest.mark.parametrize("args,fragments", BAD_INPUTS, ids=[" ".join(a) for a, _ in BAD_INPUTS])
def test_bad_input_is_one_line_and_writes_nothing(tmp_path, data_cache, monkeypatch, capsys, args, fragments):
    run_dir = tmp_path / "run"
    cached = cache_entries(data_cache)
    result = run_in_process(monkeypatch, capsys, tmp_path, *TINY_RUN, *args, f"hydra.run.dir={run_dir}")
    assert_rejected(result, *fragments)
    assert list(tmp_path.iterdir()) == []  # no run folder, no .hydra/, no outputs/
    assert cache_entries(data_cache) == cached  # no new data cache entry


SAMPLE = BAD_INPUTS[::12]
# every third row of the sample by default, the others with the long runs (-m slow); the table's
# every row goes through the same main() in test_bad_input_is_one_line_and_writes_nothing
SAMPLED = [
    pytest.param(*row, id=" ".join(row[0]), marks=() if i % 3 == 0 else pytest.mark.slow)
    for i, row in enumerate(SAMPLE)
]


@pytest.mark.parametrize("args,fragments", SAMPLED)
def test_bad_input_as_a_user_types_it(tmp_path, data_cache, args, fragments):
    """A sample of the table through a real `python -m trainer` process."""
    cached = cache_entries(data_cache)
    result = run_cli(*TINY_RUN, *args, f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path)
    assert_rejected(result, *fragments)
    assert list(tmp_path.iterdir()) == [] and cache_entries(data_cache) == cached


def test_the_table_spans_every_family():
    assert len(BAD_INPUTS) >= 60


def test_an_empty_run_folder_is_refused(tmp_path):
    result = run_cli(*TINY_RUN, "hydra.run.dir=''", cwd=tmp_path)
    assert_rejected(result, "hydra.run.dir", "empty")
    assert list(tmp_path.iterdir()) == []


def test_a_job_rejected_while_built_leaves_no_empty_folders(tmp_path):
    """The corpus is only read when the job is built, after Hydra created outputs/<run>/."""
    short = tmp_path / "short.txt"
    short.write_text("To be, or not to be.\n" * 10)
    result = run_cli("data=text", f"data.path={short}", *TINY_RUN, "run_name=r", cwd=tmp_path)
    assert_rejected(result, "data:", "block_size")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["short.txt"]  # no outputs/


@pytest.mark.parametrize("key", ["hydra.run.dir", "data.cache_dir"])
def test_a_folder_that_cannot_be_created_is_named(tmp_path, key):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    result = run_cli(*TINY_RUN, f"{key}={blocker}/sub", cwd=tmp_path)
    assert_rejected(result, key, "a_file")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file"]


def test_corpus_shorter_than_a_block(tmp_path):
    short = tmp_path / "short.txt"
    short.write_text("To be, or not to be.\n" * 10)
    result = run_cli("data=text", f"data.path={short}", *TINY_RUN, "block_size=64", f"hydra.run.dir={tmp_path / 'run'}")
    assert_rejected(result, "data:", "block_size")
    assert not (tmp_path / "run").exists()


def test_corrupt_checkpoint(tmp_path, corpus_file):
    bad = tmp_path / "ckpt_0000010.pt"
    bad.write_bytes(b"\x80\x02garbage")
    result = run_cli(*tiny_overrides(corpus_file), f"resume={bad}", f"hydra.run.dir={tmp_path / 'run'}")
    assert_rejected(result, "resume", "not a readable checkpoint")
    assert not (tmp_path / "run").exists()


def test_checkpoint_of_another_architecture(tmp_path, corpus_file, finished_run):
    before = {p: p.stat().st_mtime_ns for p in finished_run.rglob("*")}
    result = run_cli(
        *tiny_overrides(corpus_file),
        "model.n_embd=96",
        "model.n_head=2",
        "resume=auto",
        "max_iters=8",
        f"hydra.run.dir={finished_run}",
    )
    assert_rejected(result, "resume", "n_embd: 64 -> 96")
    assert {p: p.stat().st_mtime_ns for p in finished_run.rglob("*")} == before


def test_fresh_run_into_a_used_directory(corpus_file, finished_run):
    before = {p: p.stat().st_mtime_ns for p in finished_run.rglob("*")}
    result = run_cli(*tiny_overrides(corpus_file), f"hydra.run.dir={finished_run}")
    assert_rejected(result, "resume", "resume=auto")
    assert {p: p.stat().st_mtime_ns for p in finished_run.rglob("*")} == before


def test_a_run_writes_metrics_checkpoints_and_config(tmp_path, corpus_file):
    run_dir = tmp_path / "run"
    result = run_cli(
        *tiny_overrides(corpus_file, "mode=language_model"),
        "max_iters=6",
        "eval_interval=3",
        f"hydra.run.dir={run_dir}",
    )
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if "val/loss" in r] == [0, 3, 6]
    assert {"step", "train/loss"} <= set(records[0])
    assert (run_dir / "checkpoints" / "ckpt_0000006.pt").is_file()
    assert "name: language_model" in (run_dir / ".hydra" / "config.yaml").read_text()
    assert str(run_dir / "checkpoints" / "ckpt_0000006.pt") in result.stdout
    assert str(run_dir / "metrics.jsonl") in result.stdout


def test_masking_on_the_command_line_means_what_it_says(tmp_path, corpus_file):
    args = [a for a in tiny_overrides(corpus_file, "max_iters=1", "eval_interval=1") if a != "masking=sticky"]
    result = run_cli("masking=span", *args, f"hydra.run.dir={tmp_path}")
    assert result.returncode == 0, result.stderr
    config = (tmp_path / ".hydra" / "config.yaml").read_text()
    assert "type: span" in config and "train: null" in config
    assert "stages" not in (tmp_path / ".hydra" / "overrides.yaml").read_text()  # chosen by the config, not argv


# The design card's command, with every Hydra flag before and after it.
CARD = ["mode=unmasking", "masking=sticky"]
FLAG_ORDERS = [
    (["--cfg", "job"], "type: sticky"),
    (["--cfg", "hydra"], "hydra/launcher: basic"),
    (["-c", "job"], "type: sticky"),
    (["--info", "all"], "Config search path"),
    (["--help"], "masked-diffusion"),
    (["--hydra-help"], "--cfg hydra"),
]


@pytest.mark.parametrize("flags,shown", FLAG_ORDERS, ids=[" ".join(f) for f, _ in FLAG_ORDERS])
@pytest.mark.parametrize("where", ["first", "middle", "last"])
def test_hydra_flags_in_any_order(tmp_path, monkeypatch, capsys, flags, shown, where):
    """Each flag last through a real `python -m trainer` process; first and middle through the same
    main() in this process (without a second of imports per command)."""
    args = {"first": [*flags, *CARD], "middle": [CARD[0], *flags, CARD[1]], "last": [*CARD, *flags]}[where]
    if where == "last":
        result = run_cli(*args, cwd=tmp_path)
    else:
        result = run_in_process(monkeypatch, capsys, tmp_path, *args)
    assert result.returncode == 0, result.stderr
    assert shown in result.stdout
    if "job" in flags:
        assert "train: null" in result.stdout  # masking=sticky chose the single stage
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("where", ["first", "middle", "last"])
def test_a_two_job_sweep_with_the_flag_anywhere(tmp_path, corpus_file, monkeypatch, capsys, where):
    """The flag first through a real `python -m trainer` process; in the middle and last through the
    same main() in this process."""
    args = [*tiny_overrides(corpus_file, "max_iters=2", "eval_interval=2"), f"hydra.sweep.dir={tmp_path}"]
    args = [a for a in args if a != "masking=sticky"] + ["masking=sticky,random"]
    flagged = {"first": ["-m", *args], "middle": [*args[:2], "-m", *args[2:]], "last": [*args, "--multirun"]}
    if where == "first":
        result = run_cli(*flagged[where], cwd=tmp_path)
    else:
        result = run_in_process(monkeypatch, capsys, tmp_path, *flagged[where])
    assert result.returncode == 0, result.stderr
    for job, masking in (("0", "sticky"), ("1", "random")):
        config = (tmp_path / job / ".hydra" / "config.yaml").read_text()
        assert f"type: {masking}" in config and "train: null" in config


def test_a_sweep_checks_every_job_before_the_first_starts(tmp_path, corpus_file):
    sweep = tmp_path / "sweep"
    args = [a for a in tiny_overrides(corpus_file, "max_iters=2") if a != "masking=sticky"]
    result = run_cli("-m", *args, "masking=sticky", "optim.lr=1e-3,2e-3,inf", f"hydra.sweep.dir={sweep}", cwd=tmp_path)
    assert_rejected(result, "optim.lr", "finite")
    assert not sweep.exists() and list(tmp_path.iterdir()) == []


def test_a_sweep_checks_the_data_of_every_job_before_the_first_starts(
    tmp_path, corpus_file, data_cache, monkeypatch, capsys
):
    """Job 1's corpus is empty: job 0 (whose corpus is good) neither trains nor writes a cache entry."""
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    cached = cache_entries(data_cache)
    args = tiny_overrides(corpus_file, "max_iters=2")
    result = run_in_process(
        monkeypatch,
        capsys,
        tmp_path,
        "-m",
        *args,
        f"data.path={corpus_file},{empty}",
        f"hydra.sweep.dir={tmp_path / 's'}",
    )
    assert_rejected(result, "data")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty.txt"] and cache_entries(data_cache) == cached


@pytest.mark.parametrize("artefact", ["metrics.jsonl", "checkpoints/best.pt", ".hydra/config.yaml"])
def test_a_fresh_run_refuses_any_artefact_of_an_earlier_run(tmp_path, corpus_file, artefact):
    """Not only step checkpoints: metrics, best.pt or a saved config mean the folder was used."""
    (tmp_path / artefact).parent.mkdir(parents=True, exist_ok=True)
    (tmp_path / artefact).write_text("from an earlier run")
    with pytest.raises(ConfigError) as err:
        train(tmp_path, tiny_overrides(corpus_file))
    assert err.value.key == "resume" and artefact in str(err.value)
    assert (tmp_path / artefact).read_text() == "from an earlier run"


def test_a_sweep_job_folder_that_cannot_be_created_is_named(tmp_path, monkeypatch, capsys):
    (tmp_path / "a_file").write_text("not a folder")
    result = run_in_process(
        monkeypatch, capsys, tmp_path, "-m", *TINY_RUN, f"hydra.sweep.dir={tmp_path}", "hydra.sweep.subdir=a_file/x"
    )
    assert_rejected(result, "hydra.sweep.subdir", "a_file is a file")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file"]


def test_a_full_disk_ends_the_run_in_one_line_and_keeps_the_earlier_checkpoint(tmp_path, corpus_file):
    """A real full filesystem, a small tmpfs: torch's zip writer turns the OSError of a full disk into
    a RuntimeError, and the run must still end with exit 74, one line naming the file and the OS
    error, no temporary file left and the earlier checkpoint intact."""
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(disk)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip() or 'mount failed'}")
    try:
        run_dir, checkpoints = disk / "run", disk / "run" / "checkpoints"
        common = [*tiny_overrides(corpus_file, "eval_interval=4"), f"hydra.run.dir={run_dir}"]
        assert run_cli(*common, "max_iters=4").returncode == 0
        # room for half a checkpoint more: the one of step 8 does not fit
        room = shutil.disk_usage(disk).used + (checkpoints / "ckpt_0000004.pt").stat().st_size // 2
        subprocess.run(["mount", "-o", f"remount,size={room}", str(disk)], check=True)
        result = run_cli(*common, "max_iters=8", "resume=auto")
        assert result.returncode == 74, result.stderr
        assert result.stderr.strip().splitlines() == [
            f"error: cannot write checkpoint {checkpoints / 'ckpt_0000008.pt'}: No space left on device"
        ]
        assert sorted(p.name for p in checkpoints.iterdir()) == ["best.pt", "ckpt_0000004.pt", "lineage.json"]
        assert torch.load(checkpoints / "ckpt_0000004.pt", weights_only=True)["state"]["step"] == 4
    finally:
        subprocess.run(["umount", str(disk)], check=False)


def test_a_stop_while_a_large_corpus_is_prepared_ends_at_once_and_keeps_nothing(tmp_path):
    """SIGTERM while a 150-million-character corpus is tokenised (a few seconds): the command stops
    there, not after writing the cache entry, and what its line says holds: nothing was kept."""
    corpus, cache, run_dir = tmp_path / "large.txt", tmp_path / "cache", tmp_path / "run"
    corpus.write_text(generated_text(100_000) * 1500)
    command = [sys.executable, "-m", "trainer", *tiny_overrides(corpus), f"hydra.run.dir={run_dir}"]
    environment = {**os.environ, "UNMASKING_LAB_CACHE": str(cache)}
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=environment)
    deadline = time.monotonic() + 120
    while not run_dir.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)  # the run folder is claimed just before the job is built
    time.sleep(0.5)
    process.send_signal(signal.SIGTERM)
    signalled = time.monotonic()
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 143, stderr
    assert stderr.strip().splitlines() == ["stopped by SIGTERM before training started: nothing was trained or kept"]
    assert time.monotonic() - signalled < 3, "the preparation ran on after the signal"
    assert not run_dir.exists()
    assert not cache.exists() or not any(cache.iterdir())  # no cache entry, no half-written one


def test_help_lists_only_the_groups_a_user_chooses_from(monkeypatch, capsys, tmp_path):
    result = run_in_process(monkeypatch, capsys, tmp_path, "--help")
    groups = result.stdout.split("== Configuration groups ==")[1].split("== Config ==")[0]
    assert "schema/" not in groups and "system: auto, cpu, cuda\n" in groups
    assert "model: base, small, tiny" in groups and "tokenizer: bpe, byte, char, pretrained" in groups
