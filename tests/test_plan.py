"""One plan per job (DESIGN "Validate once"): the pre-launch check and the build share it, so a job's
config is validated once, and reconciling a resume returns what changes instead of changing it."""

import sys

import pytest

import trainer.contract
from tests.conftest import compose_config, run_in_process, tiny_overrides
from trainer.config import Config
from trainer.plan import plan_job, reconciled


@pytest.fixture
def validations(monkeypatch) -> list:
    """The run configs validated from now on, whichever module calls trainer.contract.check."""
    validated = []
    check = trainer.contract.check

    def counted(cfg, schema=Config):
        if schema is Config:
            validated.append(cfg)
        return check(cfg, schema)

    for module in [m for name, m in sys.modules.items() if name.startswith("trainer")]:
        if getattr(module, "check", None) is check:
            monkeypatch.setattr(module, "check", counted)
    return validated


def test_a_run_and_its_resume_validate_their_config_once(tmp_path, corpus_file, monkeypatch, capsys, validations):
    args = [*tiny_overrides(corpus_file), "run_name=once"]
    assert run_in_process(monkeypatch, capsys, tmp_path, *args).returncode == 0
    assert len(validations) == 1
    validations.clear()
    resumed = run_in_process(monkeypatch, capsys, tmp_path, *args, "resume=auto", "max_iters=8")
    assert resumed.returncode == 0, resumed.stderr
    assert len(validations) == 1


def test_each_job_of_a_sweep_validates_its_config_once(tmp_path, corpus_file, monkeypatch, capsys, validations):
    args = ["-m", *tiny_overrides(corpus_file), "run_name=sweep", "optim.lr=1e-3,2e-3"]
    result = run_in_process(monkeypatch, capsys, tmp_path, *args)
    assert result.returncode == 0, result.stderr
    assert sorted(cfg.optim.lr for cfg in validations) == [1e-3, 2e-3]


def test_reconciling_a_longer_run_keeps_the_horizon_in_a_new_plan(tmp_path, corpus_file):
    saved = plan_job(compose_config(tiny_overrides(corpus_file)), tmp_path)
    payload = {"state": {"step": saved.run.max_iters}, "config": saved.record}
    plan = plan_job(compose_config(tiny_overrides(corpus_file, "max_iters=8", "resume=auto")), tmp_path)
    kept, lines = reconciled(plan, payload)
    assert kept.run.optim.lr_decay_iters == kept.record["optim"]["lr_decay_iters"] == saved.run.max_iters
    assert plan.run.optim.lr_decay_iters is None and plan.record["optim"]["lr_decay_iters"] is None
    assert f"the learning rate decays until step {saved.run.max_iters}" in " ".join(lines)
