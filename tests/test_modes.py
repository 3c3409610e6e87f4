"""Every mode with every stages preset, with and without the console: a few steps each, so no
combination can crash; the modes without a curriculum refuse a stages preset in one line."""

from pathlib import Path

import pytest

from tests.conftest import tiny_overrides, train
from trainer.cli.main import CONF_DIR
from trainer.errors import ConfigError
from trainer.objectives import MODES

STAGES = sorted(f.stem for f in (Path(CONF_DIR) / "stages").glob("*.yaml"))
LOGGERS = {"console": "logger=[console,jsonl]", "no console": "logger=[jsonl]"}


@pytest.mark.parametrize("console", LOGGERS)
@pytest.mark.parametrize("stages", STAGES)
@pytest.mark.parametrize("mode", sorted(MODES))
def test_mode_with_stages_preset(tmp_path, corpus_file, unmasking_checkpoint, mode, stages, console):
    extra = [f"mode={mode}", f"stages={stages}", LOGGERS[console], "batch_size=16", "max_iters=2", "eval_interval=1"]
    if stages == "single":
        extra.append("masking=random")
    if mode == "sequence_scoring":  # it fills positions with a frozen unmasking model
        extra.append(f"mode.unmasking_checkpoint={unmasking_checkpoint}")
    overrides = tiny_overrides(corpus_file, *extra)
    if not MODES[mode].staged:
        with pytest.raises(ConfigError) as err:
            train(tmp_path, overrides)
        assert err.value.key in ("stages", "masking") and mode in str(err.value)
        assert list(tmp_path.iterdir()) == []
        return
    trainer, printed = train(tmp_path, overrides)
    assert trainer.state.step == 2
    n = len(trainer.curriculum.validation)
    records = (tmp_path / "metrics.jsonl").read_text()
    assert all(f'"val/stage_{i}_loss"' in records for i in range(n))
    assert ("validation stages" in printed) == (console == "console" and n > 1)


@pytest.mark.parametrize("mode", sorted(MODES))
def test_every_mode_runs_without_a_curriculum_choice(tmp_path, corpus_file, unmasking_checkpoint, mode):
    extra = [f"mode={mode}", "max_iters=2", "eval_interval=2"]
    if mode == "sequence_scoring":
        extra.append(f"mode.unmasking_checkpoint={unmasking_checkpoint}")
    trainer, _ = train(tmp_path, tiny_overrides(corpus_file, *extra))
    assert trainer.state.step == 2 and trainer.state.best_val_loss < float("inf")
