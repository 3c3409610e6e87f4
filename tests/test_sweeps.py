"""Launcher and sweeper presets (the `sweeps` extra), Optuna sweeps, and re-launched sweeps."""

import csv
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from tests.conftest import assert_rejected, run_cli, run_in_process
from trainer.cli import plugins
from trainer.cli.plugins import missing_plugin

pytest.importorskip("hydra_plugins.hydra_joblib_launcher", reason="the sweeps extra: pip install -e '.[sweeps]'")
pytest.importorskip("hydra_plugins.hydra_submitit_launcher", reason="the sweeps extra: pip install -e '.[sweeps]'")
# optuna's first import logs through alembic: here, before another test's in-process run leaves a
# logging handler on a stream pytest has closed
pytest.importorskip("hydra_plugins.hydra_optuna_sweeper._impl", reason="the sweeps extra: pip install -e '.[sweeps]'")

JOBLIB = "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher"
SUBMITIT = "hydra_plugins.hydra_submitit_launcher.submitit_launcher"
PRESETS = [
    ("hydra/launcher=parallel", JOBLIB),
    ("hydra/launcher=joblib", JOBLIB),
    ("hydra/launcher=slurm_local", f"{SUBMITIT}.LocalLauncher"),
    ("hydra/launcher=submitit_local", f"{SUBMITIT}.LocalLauncher"),
    ("hydra/launcher=slurm", f"{SUBMITIT}.SlurmLauncher"),
    ("hydra/launcher=submitit_slurm", f"{SUBMITIT}.SlurmLauncher"),
    ("hydra/sweeper=optuna_tpe", plugins.OPTUNA_SWEEPER),
    ("hydra/sweeper=optuna", plugins.OPTUNA_SWEEPER),
    ("experiment=optuna_unmasking_cpu", plugins.OPTUNA_SWEEPER),
]


def tiny_sweep(corpus_file, sweep: Path, *extra: str) -> list[str]:
    """A sweep of debug=smoke runs on the generated corpus (no masking choice: an experiment makes it)."""
    return ["-m", "data=text", f"data.path={corpus_file}", "debug=smoke", "logger=[console,jsonl]",
            f"hydra.sweep.dir={sweep}", *extra]  # fmt: skip


def sweep_rows(sweep: Path) -> list[dict]:
    with (sweep / "sweep_summary.csv").open() as file:
        return list(csv.DictReader(file))


def files_of(folder: Path) -> dict:
    return {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in folder.rglob("*") if p.is_file()}


@pytest.mark.parametrize("choice,target", PRESETS, ids=[choice for choice, _ in PRESETS])
def test_every_launcher_and_sweeper_preset_composes(choice, target, tmp_path, monkeypatch, capsys):
    result = run_in_process(monkeypatch, capsys, tmp_path, "--cfg", "hydra", choice)
    assert result.returncode == 0, result.stderr
    node = OmegaConf.create(result.stdout).hydra
    assert target in (node.launcher._target_, node.sweeper._target_)
    assert list(tmp_path.iterdir()) == []


def test_the_slurm_preset_requeues_through_the_trainers_checkpoint(tmp_path, monkeypatch, capsys):
    result = run_in_process(monkeypatch, capsys, tmp_path, "--cfg", "hydra", "hydra/launcher=slurm")
    launcher = OmegaConf.create(result.stdout).hydra.launcher
    assert launcher.max_num_timeout > 0 and launcher.signal_delay_s >= 60 and launcher.gpus_per_task == 1
    assert launcher.additional_parameters.requeue is True


def test_a_slurm_sweep_without_resume_auto_is_refused(tmp_path, corpus_file, monkeypatch, capsys):
    args = tiny_sweep(corpus_file, tmp_path / "sweep", "masking=sticky", "hydra/launcher=slurm")
    result = run_in_process(monkeypatch, capsys, tmp_path, *args)
    assert_rejected(result, "resume: none on SLURM", "allowed: resume=auto")
    assert list(tmp_path.iterdir()) == []


def test_joblib_runs_two_jobs_in_parallel(tmp_path, corpus_file):
    sweep = tmp_path / "sweep"
    args = tiny_sweep(corpus_file, sweep, "masking=sticky", "hydra/launcher=parallel", "optim.lr=1e-3,2e-3")
    result = run_cli(*args, "system.threads=1", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "n_jobs=2" in result.stdout  # joblib's own line
    assert [(row["job"], row["status"]) for row in sweep_rows(sweep)] == [("0", "done"), ("1", "done")]
    # each job's span, from its saved config to its summary: they overlap
    (start_0, end_0), (start_1, end_1) = [
        ((sweep / job / ".hydra" / "config.yaml").stat().st_mtime, (sweep / job / "summary.json").stat().st_mtime)
        for job in ("0", "1")
    ]
    assert start_0 < end_1 and start_1 < end_0
    assert OmegaConf.load(sweep / "1" / ".hydra" / "config.yaml").optim.lr == 2e-3


@pytest.mark.slow  # the Optuna sweeper end to end (~35 s); its presets and bounds are checked by default
def test_optuna_runs_three_trials_and_a_relaunch_skips_them(tmp_path, corpus_file):
    sweep = tmp_path / "sweep"
    args = tiny_sweep(corpus_file, sweep, "experiment=optuna_unmasking_cpu", "hydra.sweeper.n_trials=3")
    result = run_cli(*args, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    losses = [json.loads((sweep / str(job) / "summary.json").read_text())["best_val_loss"] for job in range(3)]
    results = OmegaConf.load(sweep / "optimization_results.yaml")
    assert results.best_value == min(losses)
    assert set(results.best_params) == {"optim.lr", "optim.warmup_iters", "masking.max_masked_ratio"}
    for job in range(3):
        run = OmegaConf.load(sweep / str(job) / ".hydra" / "config.yaml")
        assert 3e-4 <= run.optim.lr <= 1e-2 and 0.15 <= run.masking.max_masked_ratio <= 0.6
        assert run.optim.warmup_iters in (0, 20, 40, 60, 80, 100) and run.masking.type == "random"
    jobs = {job: files_of(sweep / str(job)) for job in range(3)}

    again = run_cli(*args, "resume=auto", cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    for job, loss in enumerate(losses):  # the seeded sampler asks the same trials: each is found done
        assert f"already done: {sweep / str(job)} (4 steps, best val loss {loss:.4f} at step 4)" in again.stdout
        assert files_of(sweep / str(job)) == jobs[job]
    assert OmegaConf.load(sweep / "optimization_results.yaml").best_value == min(losses)
    assert [row["status"] for row in sweep_rows(sweep)] == ["done"] * 3


def test_a_relaunched_sweep_skips_its_finished_job_and_resumes_the_other(tmp_path, corpus_file):
    sweep = tmp_path / "sweep"
    args = tiny_sweep(corpus_file, sweep, "masking=sticky", "eval_interval=2", "optim.lr=1e-3,2e-3")
    assert run_cli(*args, cwd=tmp_path).returncode == 0
    # job 1 as if killed after its checkpoint at step 2: no final checkpoint, no summary
    (sweep / "1" / "checkpoints" / "ckpt_0000004.pt").unlink()
    (sweep / "1" / "summary.json").unlink()
    finished = files_of(sweep / "0")

    result = run_cli(*args, "resume=auto", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("already done:") == 1 and f"already done: {sweep / '0'} (4 steps" in result.stdout
    assert files_of(sweep / "0") == finished
    assert f"resumed from {sweep / '1' / 'checkpoints' / 'ckpt_0000002.pt'} at step 2" in result.stdout
    assert [(row["job"], row["status"], row["step"]) for row in sweep_rows(sweep)] == [
        ("0", "done", "4"),
        ("1", "resumed", "4"),
    ]
    summary = json.loads((sweep / "1" / "summary.json").read_text())
    assert summary["resumed_from"].endswith("ckpt_0000002.pt") and summary["status"] == "done"


def test_an_optuna_search_space_is_checked_at_its_bounds(tmp_path, corpus_file, monkeypatch, capsys):
    base = tiny_sweep(corpus_file, tmp_path / "sweep", "experiment=optuna_unmasking_cpu")
    result = run_in_process(monkeypatch, capsys, tmp_path, *base, "optim.lr=interval(-0.1, 0.1)")
    assert_rejected(result, "optim.lr: -0.1 is not allowed", "greater than 0")
    result = run_in_process(monkeypatch, capsys, tmp_path, *base, "optim.lr=tag(log, interval(0, 0.1))")
    assert_rejected(result, "hydra.sweeper.params", "log distribution")
    result = run_in_process(monkeypatch, capsys, tmp_path, *base, "masking=choice(sticky,nope)")
    assert_rejected(result, "masking: 'nope' is not an option")
    assert list(tmp_path.iterdir()) == []


# Runs `python -m trainer ARGS` with a plugin hidden from Hydra's plugin scan and from imports.
HIDE_PLUGIN = """
import pkgutil, runpy, sys
hidden = sys.argv[1]
walk = pkgutil.walk_packages
pkgutil.walk_packages = lambda *a, **k: (m for m in walk(*a, **k) if not m.name.startswith(hidden))
class Hide:
    def find_spec(self, name, path=None, target=None):
        if name == hidden or name.startswith(hidden + "."):
            raise ModuleNotFoundError(name)
sys.meta_path.insert(0, Hide())
sys.argv = ["trainer", *sys.argv[2:]]
runpy.run_module("trainer", run_name="__main__")
"""


@pytest.mark.parametrize(
    "hidden,choice,says",
    [
        ("hydra_joblib_launcher", "hydra/launcher=parallel", "hydra/launcher: parallel (joblib) needs the plugin "
         "hydra-joblib-launcher; allowed: pip install -e '.[sweeps]'"),
        pytest.param("hydra_joblib_launcher", "hydra/launcher=joblib", "hydra/launcher: joblib needs the plugin "
         "hydra-joblib-launcher; allowed: pip install -e '.[sweeps]'", marks=pytest.mark.slow),  # parallel's plugin
        ("hydra_optuna_sweeper", "experiment=optuna_unmasking_cpu", "hydra/sweeper: optuna_tpe (optuna) needs the "
         "plugin hydra-optuna-sweeper; allowed: pip install -e '.[sweeps]'"),
    ],
)  # fmt: skip
def test_a_preset_without_its_plugin_is_one_line(tmp_path, corpus_file, hidden, choice, says):
    args = tiny_sweep(corpus_file, tmp_path / "sweep", "masking=sticky", choice)
    result = subprocess.run(
        [sys.executable, "-c", HIDE_PLUGIN, f"hydra_plugins.{hidden}", *args],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={**os.environ, "COLUMNS": "200"},
        timeout=120,
    )
    assert_rejected(result, says)
    assert result.stderr.strip() == f"error: {says}"
    assert list(tmp_path.iterdir()) == []


def test_missing_plugin_names_only_plugins_that_are_absent(monkeypatch):
    report = "In 'hydra/config': Could not find 'hydra/launcher/joblib'\n\nAvailable options in 'hydra/launcher':"
    assert missing_plugin(report) is None  # installed: Hydra's own report stands
    monkeypatch.setitem(plugins.PLUGINS, "hydra/launcher/joblib", ("a-plugin", "hydra_plugins.no_such_plugin"))
    assert (
        missing_plugin(report)
        == "hydra/launcher: joblib needs the plugin a-plugin; allowed: pip install -e '.[sweeps]'"
    )
    assert missing_plugin("Could not find 'hydra/launcher/other'") is None  # not a plugin's option


@pytest.mark.slow
def test_submitit_requeues_a_job_stopped_by_its_signal_and_it_resumes(tmp_path, corpus_file):
    """submitit's pre-emption signal (SIGUSR2): the trainer writes a checkpoint, submitit requeues the
    job, which continues with resume=auto and finishes; the sweep table says resumed."""
    sweep = tmp_path / "sweep"
    args = tiny_sweep(corpus_file, sweep, "masking=sticky", "hydra/launcher=slurm_local", "resume=auto")
    process = subprocess.Popen(
        [sys.executable, "-m", "trainer", *args, "max_iters=300", "eval_interval=100", "log_interval=5"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=tmp_path,
    )
    metrics = sweep / "0" / "metrics.jsonl"
    deadline = time.monotonic() + 120
    while not (metrics.exists() and metrics.read_text().count("train/loss") >= 3):
        assert time.monotonic() < deadline and process.poll() is None
        time.sleep(0.2)
    (controller,) = [int(p.name) for p in (sweep / ".submitit").iterdir() if p.name.isdigit()]
    children = Path(f"/proc/{controller}/task/{controller}/children").read_text().split()
    for child in children:  # the job's process, as submitit's own timeout would signal it
        os.kill(int(child), 12)  # SIGUSR2
    stdout, stderr = process.communicate(timeout=240)
    assert process.returncode == 0, stderr
    log = (sweep / ".submitit" / str(controller) / f"{controller}_0_log.out").read_text()
    step = int(log.split("stopped by SIGUSR2: ")[1].split(" ")[0])
    assert f"resumed from {sweep / '0' / 'checkpoints' / f'ckpt_{step:07d}.pt'} at step {step}" in log
    assert [(row["status"], row["step"]) for row in sweep_rows(sweep)] == [("resumed", "300")]


@pytest.mark.parametrize(
    "extra,says",
    [
        (["masking=sticky", "hydra/launcher=parallel", "hydra.launcher.n_jobs=0"], "hydra.launcher.n_jobs: 0"),
        (["experiment=optuna_unmasking_cpu", "hydra.sweeper.n_trials=0"], "hydra.sweeper.n_trials: 0"),
        (["masking=sticky", "hydra/launcher=slurm", "resume=auto"], "hydra/launcher: SLURM's srun"),
        (["masking=sticky", "hydra/launcher=slurm_local", "hydra.launcher.timeout_min=0"], "timeout_min: 0"),
        # the search space on the command line alone (no hydra.sweeper.params)
        (["masking=sticky", "hydra/sweeper=optuna_tpe", "optim.lr=interval(-0.1, 0.1)"], "optim.lr: -0.1"),
    ],
)
def test_a_launcher_or_sweeper_setting_the_plugin_would_refuse_is_one_line(
    tmp_path, corpus_file, monkeypatch, capsys, extra, says
):
    monkeypatch.setenv("PATH", str(tmp_path))  # no srun here
    args = tiny_sweep(corpus_file, tmp_path / "sweep", *extra, "optim.warmup_iters=0,1")
    assert_rejected(run_in_process(monkeypatch, capsys, tmp_path, *args), says)
    assert list(tmp_path.iterdir()) == []


def test_a_restart_without_a_checkpoint_keeps_the_config_of_the_run_it_replaces(
    tmp_path, corpus_file, monkeypatch, capsys
):
    """A job that failed before its first checkpoint starts again with resume=auto, but not under
    other values: a re-launched sweep whose job numbers changed meaning would overwrite its record."""
    args = ["data=text", f"data.path={corpus_file}", "debug=smoke", "logger=[console,jsonl]", "masking=sticky"]
    args += ["run_name=job", "max_iters=2", "eval_interval=2"]
    assert run_in_process(monkeypatch, capsys, tmp_path, *args).returncode == 0
    run_dir = tmp_path / "outputs" / "job"
    for checkpoint in (run_dir / "checkpoints").iterdir():
        checkpoint.unlink()  # as if it had diverged at its first step
    before = files_of(run_dir)
    result = run_in_process(monkeypatch, capsys, tmp_path, *args, "resume=auto", "optim.lr=2e-3")
    assert_rejected(result, "holds a run without a checkpoint whose config differs", "optim.lr: 0.001 -> 0.002")
    assert files_of(run_dir) == before
    assert run_in_process(monkeypatch, capsys, tmp_path, *args, "resume=auto").returncode == 0  # same values
