"""The run folder: claimed by one run at a time (a lock naming the process, taken over from a dead
one), a default name that two runs started together cannot share, and folders that cannot be
created refused in one line before anything is written."""

import json
import multiprocessing
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import assert_rejected, compose_config, run_cli, run_in_process, tiny_overrides
from trainer.errors import ConfigError
from trainer.run_lock import LOCK, claim, live_holder, release


def _claim_at_once(run_dir: Path, start, end, results) -> None:
    """One claimer of the race: all start together, and the winner holds its lock until all have tried."""
    start.wait()
    try:
        claim(run_dir, "hydra.run.dir")
        results.put("won")
    except ConfigError as err:
        results.put(f"refused: {err}")
    end.wait()


def dead_pid() -> int:
    process = subprocess.Popen(["true"])
    process.wait()
    return process.pid


@pytest.mark.parametrize("stale", [False, True], ids=["empty folder", "stale lock"])
def test_of_two_claims_at_the_same_moment_exactly_one_wins(tmp_path, stale):
    """Many times, each claimer started first in turn: one lock, one refusal in words."""
    context = multiprocessing.get_context("fork")
    for attempt in range(25):
        run_dir = tmp_path / str(attempt)
        run_dir.mkdir()
        if stale:  # a run killed with SIGKILL: both claimers take it over, only one may
            (run_dir / LOCK).write_text(json.dumps({"pid": dead_pid(), "host": os.uname().nodename}))
        start, end, results = context.Barrier(2), context.Barrier(2), context.Queue()
        claimers = [context.Process(target=_claim_at_once, args=(run_dir, start, end, results)) for _ in range(2)]
        for claimer in claimers if attempt % 2 else reversed(claimers):
            claimer.start()
        outcomes = sorted(results.get(timeout=30) for _ in claimers)
        for claimer in claimers:
            claimer.join(timeout=30)
        assert outcomes[1] == "won" and outcomes[0].startswith("refused: hydra.run.dir: "), outcomes
        assert "is in use by a running run" in outcomes[0]
        assert json.loads((run_dir / LOCK).read_text())["pid"] in {c.pid for c in claimers}


def test_a_lock_is_released_only_by_its_holder(tmp_path):
    lock = claim(tmp_path, "hydra.run.dir")
    assert lock.fresh and json.loads(lock.path.read_text())["pid"] == os.getpid()
    assert live_holder(lock.path) is not None
    with pytest.raises(ConfigError, match="in use"):
        claim(tmp_path, "hydra.run.dir")
    release(lock)
    assert not lock.path.exists()
    again = claim(tmp_path, "hydra.run.dir")
    lock.path.write_text(again.text.replace(str(os.getpid()), "1"))  # taken over by another run meanwhile
    release(again)
    assert lock.path.exists()


def launch(cwd: Path, *args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "trainer", *args], cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def test_two_commands_started_together_in_one_folder_train_once(tmp_path, corpus_file):
    """Both pass the pre-launch check of the empty folder; the one that does not claim it is refused
    in one line (or, if the other already ended, told that the folder holds a run) and writes nothing.
    (The race in both orders, many times: above, on the claim itself.)"""
    commands = [tiny_overrides(corpus_file, "max_iters=2", f"seed={seed}", "hydra.run.dir=run") for seed in (1, 2)]
    processes = [launch(tmp_path, *command) for command in commands]
    results = [(p.wait(timeout=120), *p.communicate()) for p in processes]
    codes = sorted(code for code, _, _ in results)
    assert codes == [0, 2], results
    code, _, stderr = next(r for r in results if r[0] == 2)
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    assert "is in use by a running run" in lines[0] or "already holds a run" in lines[0], lines
    winner = next(seed for (code, _, _), seed in zip(results, (1, 2)) if code == 0)
    run = tmp_path / "run"
    assert json.loads((run / "summary.json").read_text())["status"] == "done"
    assert f"seed: {winner}" in (run / ".hydra" / "config.yaml").read_text()
    assert not (run / LOCK).exists()


def test_a_live_run_refuses_resume_and_a_killed_one_is_resumed(tmp_path, corpus_file, monkeypatch, capsys):
    base, folder = tiny_overrides(corpus_file, "eval_interval=3"), f"hydra.run.dir={tmp_path / 'run'}"
    args = [*base, "max_iters=100000", folder]
    process = launch(tmp_path, *args)
    checkpoints = tmp_path / "run" / "checkpoints"
    deadline = time.monotonic() + 120
    while not list(checkpoints.glob("ckpt_*.pt")):
        assert time.monotonic() < deadline and process.poll() is None, process.communicate()
        time.sleep(0.2)
    assert json.loads((tmp_path / "run" / LOCK).read_text())["pid"] == process.pid  # the folder says who runs
    for resume in ("resume=auto", "resume=none"):
        refused = run_in_process(monkeypatch, capsys, tmp_path, *args, resume)
        assert_rejected(refused, "hydra.run.dir", "is in use by a running run", f"pid {process.pid}")

    os.kill(process.pid, signal.SIGKILL)
    process.communicate(timeout=60)
    assert (tmp_path / "run" / LOCK).exists()  # stale: its process is gone
    step = max(int(re.search(r"\d+", path.name).group()) for path in checkpoints.glob("ckpt_*.pt"))
    resumed = run_cli(*base, f"max_iters={step + 2}", folder, "resume=auto", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["step"] == step + 2
    assert not (tmp_path / "run" / LOCK).exists()


NAME_300 = "n" * 300


@pytest.mark.parametrize(
    "override,key",
    [
        ("hydra.run.dir=/sys/x", "hydra.run.dir"),
        ("data.cache_dir=/sys/x", "data.cache_dir"),
        (f"run_name={NAME_300}", "run_name"),
        ("run_name=" + "实" * 100, "run_name"),  # 100 characters, 300 bytes
        (f"hydra.run.dir=outputs/{NAME_300}/x", "hydra.run.dir"),
        (f"data.cache_dir=cache/{NAME_300}", "data.cache_dir"),
        (f"hydra.sweep.dir=multirun/{NAME_300}", "hydra.sweep.dir"),
    ],
)
def test_a_folder_that_cannot_be_made_is_one_line_and_nothing_is_left(tmp_path, monkeypatch, capsys, override, key):
    if override.endswith("/sys/x") and not Path("/sys").is_dir():
        pytest.skip("no /sys on this system")
    flags = ["-m"] if key == "hydra.sweep.dir" else []
    result = run_in_process(monkeypatch, capsys, tmp_path, *flags, "debug=smoke", override)
    assert_rejected(result, f"{key}: ")
    assert list(tmp_path.iterdir()) == []
    assert not Path("/sys/x").exists()


def test_the_default_run_name_is_the_start_to_the_millisecond_and_the_process():
    """Two runs started in the same second differ by their process; one process names one folder,
    however often it composes its config (the pre-launch check's and Hydra's)."""
    name = compose_config([]).run_name
    assert re.fullmatch(rf"\d{{4}}-\d\d-\d\d_\d\d-\d\d-\d\d\.\d{{3}}_{os.getpid()}", name), name
    assert compose_config(["seed=3"]).run_name == name


def test_a_run_folder_is_enough_to_evaluate_resume_and_sample_it(tmp_path, corpus_file, monkeypatch, capsys):
    from tests.test_sample import sample_command

    made = run_in_process(monkeypatch, capsys, tmp_path, *tiny_overrides(corpus_file), "run_name=X")
    assert made.returncode == 0, made.stderr
    evaluated = run_in_process(monkeypatch, capsys, tmp_path, "run_name=X", "resume=auto", "eval_only=true")
    assert evaluated.returncode == 0, evaluated.stderr
    assert "the run's own overrides apply" in evaluated.stdout and "debug=smoke" in evaluated.stdout
    resumed = run_in_process(monkeypatch, capsys, tmp_path, "run_name=X", "resume=auto", "max_iters=6")
    assert resumed.returncode == 0, resumed.stderr
    assert "resume: max_iters changed 4 -> 6" in resumed.stdout and "done: 6 of 6 steps" in resumed.stdout
    code, out, err = sample_command(monkeypatch, capsys, tmp_path, f"checkpoint={tmp_path / 'outputs' / 'X'}", "seed=1")
    assert code == 0, err
    changed = run_in_process(monkeypatch, capsys, tmp_path, "run_name=X", "resume=auto", "batch_size=4")
    assert_rejected(changed, "resume", "batch_size: 8 -> 4")  # what may change is checked as before
