"""Every file of every config group composes, validates, and every experiment preset runs."""

from pathlib import Path

import pytest

from tests.conftest import TINY_RUN, compose_config, train
from trainer.cli import CONF_DIR
from trainer.errors import ConfigError
from trainer.validation import validate

GROUPS = sorted(p.name for p in Path(CONF_DIR).iterdir() if p.is_dir() and p.name not in ("experiment", "logger"))
OPTIONS = [(group, f.stem) for group in GROUPS for f in sorted((Path(CONF_DIR) / group).glob("*.yaml"))]
EXPERIMENTS = sorted(f.stem for f in (Path(CONF_DIR) / "experiment").glob("*.yaml"))


def test_every_group_has_options():
    assert {"mode", "masking", "model", "data", "optim", "system"} <= set(GROUPS)
    assert len(OPTIONS) >= 14


# what an option needs besides itself to form a complete config
COMPANIONS = {
    ("mode", "sequence_scoring"): ["mode.unmasking_checkpoint=unmasking.pt"],
    ("transfer", "fine_tuning"): ["transfer.checkpoint=any.pt"],
    ("transfer", "feature_extraction"): ["transfer.checkpoint=any.pt", "mode=token_classification"],
    ("transfer", "two_stage"): ["transfer.checkpoint=any.pt", "mode=token_classification"],
}


@pytest.mark.parametrize("group,option", OPTIONS, ids=[f"{g}={o}" for g, o in OPTIONS])
def test_option_composes_and_validates(group, option, corpus_file):
    cfg = compose_config([f"{group}={option}", f"data.path={corpus_file}", *COMPANIONS.get((group, option), [])])
    validate(cfg)


@pytest.mark.parametrize("loggers", ["[console]", "[jsonl]", "[console,jsonl]"])
def test_logger_selections_compose(loggers):
    cfg = compose_config([f"logger={loggers}"])
    assert (cfg.logger.console is not None) == ("console" in loggers)
    assert (cfg.logger.jsonl is not None) == ("jsonl" in loggers)


def test_default_config_is_unmasking_with_sticky_masking_on_the_builtin_corpus():
    cfg = compose_config([])
    assert (cfg.mode.name.value, cfg.masking.type, cfg.data.name) == ("unmasking", "sticky", "shakespeare")
    assert cfg.resume == "none"


def test_nanogpt_cpu_recipe():
    cfg = compose_config(["experiment=shakespeare_lm_cpu", "data.path=x.txt"])
    assert cfg.mode.name.value == "language_model" and cfg.mode.attention.value == "causal"
    assert cfg.model.positions.value == "learned" and not cfg.model.bias
    assert (cfg.model.n_layer, cfg.model.n_head, cfg.model.n_embd, cfg.model.dropout) == (4, 4, 128, 0.0)
    assert (cfg.block_size, cfg.batch_size, cfg.max_iters) == (64, 12, 2000)
    o = cfg.optim
    assert (o.lr, o.min_lr, list(o.betas), o.weight_decay, o.grad_clip) == (1e-3, 1e-4, [0.9, 0.99], 0.1, 1.0)
    assert (o.warmup_iters, o.lr_decay_iters, cfg.eval_interval, cfg.eval_iters) == (100, 2000, 250, 20)
    assert cfg.data.val_fraction == 0.1


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_experiment_runs_a_few_steps(tmp_path, experiment, corpus_file, unmasking_checkpoint):
    overrides = [
        f"experiment={experiment}",
        "data=text",
        f"data.path={corpus_file}",
        *TINY_RUN,
        "max_iters=3",
        "eval_interval=3",
    ]
    cfg = compose_config(overrides)
    if cfg.mode.unmasking_checkpoint:  # the pipeline presets read the checkpoint of an unmasking run
        overrides.append(f"mode.unmasking_checkpoint={unmasking_checkpoint}")
    if cfg.transfer.checkpoint:
        overrides.append(f"transfer.checkpoint={unmasking_checkpoint}")
    trainer, _ = train(tmp_path, overrides)
    assert trainer.state.step == 3
    assert (tmp_path / "checkpoints" / "ckpt_0000003.pt").is_file()


@pytest.mark.parametrize(
    "override,key",
    [
        ("eval_interval=0", "eval_interval"),
        ("optim.min_lr=1.0", "optim.min_lr"),
        ("model.dropout=1.0", "model.dropout"),
        ("masking.corruption.random_prob=0.5", "masking.corruption"),
        ("checkpoint.keep_last=0", "checkpoint.keep_last"),
    ],
)
def test_validate_names_the_key(override, key):
    with pytest.raises(ConfigError) as err:
        validate(compose_config([override]))
    assert err.value.key.startswith(key)
