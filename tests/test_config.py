"""The config tree: every option composes under its own schema, the schemas' defaults are the
default run's values, and every experiment preset runs."""

from dataclasses import fields
from pathlib import Path

import pytest
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf
from omegaconf.errors import ConfigKeyError

from tests.conftest import TINY_RUN, compose_config, train
from trainer.cli.main import CONF_DIR
from trainer.config import Config
from trainer.contract import check
from trainer.errors import ConfigError
from trainer.objectives import MODES
from trainer.preparation import train_bpe
from trainer.vocab import CharTokenizerConfig

GROUPS = sorted(p.name for p in Path(CONF_DIR).iterdir() if p.is_dir() and p.name not in ("experiment", "logger"))
OPTIONS = [(group, f.stem) for group in GROUPS for f in sorted((Path(CONF_DIR) / group).glob("*.yaml"))]
EXPERIMENTS = sorted(f.stem for f in (Path(CONF_DIR) / "experiment").glob("*.yaml"))


def test_every_group_has_options():
    assert {"mode", "masking", "stages", "model", "data", "optim", "system", "debug"} <= set(GROUPS)
    assert len(OPTIONS) >= 20


def test_every_mode_has_a_conf_file_and_a_schema():
    assert set(MODES) == {f.stem for f in (Path(CONF_DIR) / "mode").glob("*.yaml")}
    assert set(MODES) == {"language_model", "unmasking", "token_classification", "sequence_scoring"}


def tokenizer_json(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("tokenizer") / "tokenizer.json"
    train_bpe(["the king and the queen"] * 10, 300, 2)._tokenizer.save(str(path))
    return path


@pytest.fixture(scope="module")
def companions(tmp_path_factory, unmasking_checkpoint, corpus_file):
    """What an option needs besides itself to form a complete, valid config."""
    return {
        ("mode", "sequence_scoring"): [f"mode.unmasking_checkpoint={unmasking_checkpoint}"],
        ("transfer", "fine_tuning"): [f"transfer.checkpoint={unmasking_checkpoint}"],
        ("transfer", "feature_extraction"): [
            f"transfer.checkpoint={unmasking_checkpoint}",
            "mode=token_classification",
        ],
        ("transfer", "two_stage"): [f"transfer.checkpoint={unmasking_checkpoint}", "mode=token_classification"],
        ("data", "text"): [f"data.path={corpus_file}"],
        ("data", "jsonl"): [f"data.path={corpus_file}"],  # checked when it is read, not composed
        ("data", "parquet"): [f"data.path={corpus_file}"],
        ("data", "hf"): ["data.dataset=wikitext"],
        ("data", "text8"): [f"data.path={corpus_file}"],  # its size is checked when it is read
        ("data", "enwik8"): [f"data.path={corpus_file}"],
        ("tokenizer", "pretrained"): [f"tokenizer.path={tokenizer_json(tmp_path_factory)}"],
        ("stages", "single"): ["masking=sticky"],
        ("loss", "reference"): ["max_iters=7000"],  # its penalty starts at step 6000
    }


@pytest.mark.parametrize("group,option", OPTIONS, ids=[f"{g}={o}" for g, o in OPTIONS])
def test_option_composes_under_its_schema_and_validates(group, option, companions):
    cfg = compose_config([f"{group}={option}", *companions.get((group, option), [])])
    run = check(cfg)
    node = getattr(run, group, None)
    if group in ("mode", "masking", "tokenizer"):  # one schema per option: the option's own class
        assert type(node).__name__ != "dict" and getattr(node, "name", getattr(node, "type", None)) == option
    # a key that the option's schema does not declare is refused when the config is composed
    if group not in ("debug", "stages") and node is not None:
        with pytest.raises((ConfigKeyError, ConfigCompositionException)):
            compose_config([f"{group}={option}", f"{group}.no_such_key=1", *companions.get((group, option), [])])


def test_a_key_of_another_mode_is_refused():
    with pytest.raises((ConfigKeyError, ConfigCompositionException)):
        compose_config(["mode=language_model", "mode.fill=sample"])
    with pytest.raises((ConfigKeyError, ConfigCompositionException)):
        compose_config(["masking=span", "masking.corruption.mask_prob=0.5"])


def test_schema_defaults_are_the_default_run():
    """Declared once: the dataclass defaults equal what the default config composes to."""
    composed = OmegaConf.to_container(compose_config([]), resolve=False, enum_to_str=True)
    schema = OmegaConf.to_container(OmegaConf.structured(Config), resolve=False, enum_to_str=True)
    for key in ("model", "data", "optim", "system", "stability", "transfer", "checkpoint"):
        assert composed[key] == schema[key], key
    top = [f.name for f in fields(Config) if f.name not in ("run_name",) and not isinstance(schema[f.name], dict)]
    assert {k: composed[k] for k in top if k not in ("masking", "stages", "mode", "tokenizer")} == {
        k: schema[k] for k in top if k not in ("masking", "stages", "mode", "tokenizer")
    }
    assert compose_config([]).tokenizer == OmegaConf.structured(CharTokenizerConfig)
    for mode in MODES.values():
        required = {"unmasking_checkpoint": "x.pt"} if mode.name == "sequence_scoring" else {}
        composed = compose_config([f"mode={mode.name}", *(f"mode.{k}={v}" for k, v in required.items())]).mode
        assert composed == OmegaConf.merge(OmegaConf.structured(mode), required)


def test_variants_inherit_a_base():
    assert "base" in (Path(CONF_DIR) / "system" / "cpu.yaml").read_text()
    assert check(compose_config(["system=cpu"])).system.device.value == "cpu"
    strict = check(compose_config(["stability=strict"])).stability
    assert strict.policy.value == "raise" and strict.lr_backoff == 0.5  # lr_backoff from the default


def test_default_config_is_unmasking_with_the_easy_to_hard_curriculum():
    run = check(compose_config([]))
    assert (run.mode.name, run.data.name.value, run.masking) == ("unmasking", "shakespeare", None)
    assert len(run.stages.train) == 4 and run.resume == "none"


def test_masking_choice_trains_that_strategy_alone():
    run = check(compose_config(["masking=random"]))
    assert run.stages.train is None and run.masking.type == "random"
    run = check(compose_config(["masking=random", "stages=single"]))
    assert run.masking.max_masked_ratio == 0.5
    with pytest.raises(ConfigError, match="masking"):
        check(compose_config(["masking=random", "stages=canonical14"]))


def test_stage_entries_get_their_strategy_defaults():
    """A stage written without `corruption` corrupts like the masking group of its type."""
    run = check(compose_config(["stages=easy_to_hard"]))
    assert all(stage.corruption is not None for stage in run.stages.train)
    run = check(compose_config(["stages=easy_to_hard", "+stages.train.0.corruption=null"]))
    assert run.stages.train[0].corruption is None


def test_modes_without_a_curriculum_unset_it():
    run = check(compose_config(["mode=language_model"]))
    assert run.stages is None and run.masking is None
    with pytest.raises(ConfigError, match="stages"):
        check(compose_config(["mode=language_model", "stages=canonical14"]))


def test_nanogpt_cpu_recipe():
    run = check(compose_config(["experiment=shakespeare_lm_cpu"]))
    assert run.data.name == "shakespeare" and run.data.path is None  # the built-in plays: no download, no file
    assert run.mode.name == "language_model" and run.mode.attention == "causal"
    assert run.model.positions == "learned" and not run.model.bias
    assert (run.model.n_layer, run.model.n_head, run.model.n_embd, run.model.dropout) == (4, 4, 128, 0.0)
    assert (run.block_size, run.batch_size, run.max_iters) == (64, 12, 2000)
    o = run.optim
    assert (o.lr, o.min_lr, list(o.betas), o.weight_decay, o.grad_clip) == (1e-3, 1e-4, [0.9, 0.99], 0.1, 1.0)
    assert (o.warmup_iters, o.lr_decay_iters, run.eval_interval, run.eval_iters) == (100, 2000, 250, 20)


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_experiment_runs_a_few_steps(tmp_path, experiment, corpus_file, unmasking_checkpoint):
    overrides = [f"experiment={experiment}", "data=text", f"data.path={corpus_file}", *TINY_RUN]
    cfg = compose_config(overrides)
    if cfg.mode.get("unmasking_checkpoint"):  # the pipeline presets read the checkpoint of an unmasking run
        overrides.append(f"mode.unmasking_checkpoint={unmasking_checkpoint}")
    if cfg.transfer.checkpoint:
        overrides.append(f"transfer.checkpoint={unmasking_checkpoint}")
    if cfg.transfer.unfreeze_at_iteration:
        overrides.append("transfer.unfreeze_at_iteration=2")
    trainer, _ = train(tmp_path, overrides)
    assert trainer.state.step == 4
    assert (tmp_path / "checkpoints" / "ckpt_0000004.pt").is_file()


SCORER_REFUSES = {
    "loss.label_smoothing=0.1": "loss.label_smoothing",
    "loss.entropy_penalty.max=0.5": "loss.entropy_penalty",
    "loss.weight_by_mask_ratio=true": "loss.weight_by_mask_ratio",
    "loss.reduction=sample": "loss.reduction",
}


@pytest.mark.parametrize("modifier", SCORER_REFUSES)
def test_sequence_scoring_refuses_every_loss_modifier(modifier, unmasking_checkpoint):
    cfg = compose_config(["mode=sequence_scoring", f"mode.unmasking_checkpoint={unmasking_checkpoint}", modifier])
    with pytest.raises(ConfigError) as err:
        check(cfg)
    assert err.value.key == SCORER_REFUSES[modifier] and "sequence_scoring" in err.value.problem


MODIFIERS_REFUSED = [
    ("language_model", "loss.weight_by_mask_ratio=true", "no mask ratio"),
    ("language_model", "loss.reduction=sample", "token mean"),
    ("token_classification", "loss.entropy_penalty.max=0.5", "always uniform"),
]


@pytest.mark.parametrize("mode,modifier,reason", MODIFIERS_REFUSED)
def test_a_mode_takes_the_modifiers_that_mean_something_in_it(mode, modifier, reason):
    kept = {
        "language_model": ["loss.label_smoothing=0.1", "loss.entropy_penalty.max=0.5"],
        "token_classification": ["loss.label_smoothing=0.1", "loss.weight_by_mask_ratio=true", "loss.reduction=sample"],
    }[mode]
    assert check(compose_config([f"mode={mode}", *kept])).loss.label_smoothing == 0.1
    with pytest.raises(ConfigError, match=reason):
        check(compose_config([f"mode={mode}", *kept, modifier]))


def test_a_ramp_that_ends_after_the_run_is_named_with_how_far_it_gets():
    """A warmup or an entropy-penalty ramp longer than the run is legal (a resume may raise
    max_iters) but is said in one line each; a run whose ramps end in time says nothing."""
    ramps = ["optim.warmup_iters=1000", "loss.entropy_penalty.max=0.5", "loss.entropy_penalty.end_iter=100"]
    notes = check(compose_config(["debug=smoke", "max_iters=20", *ramps])).ramp_notes()
    assert notes == [
        "note: optim.warmup_iters=1000 ends after max_iters=20: the learning rate reaches 2.0% of optim.lr=0.001",
        "note: loss.entropy_penalty.end_iter=100 ends after max_iters=20: the penalty reaches 0.1 of "
        "loss.entropy_penalty.max=0.5",
    ]
    assert check(compose_config(["debug=smoke"])).ramp_notes() == []
