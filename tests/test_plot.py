"""trainer.reporting.plot: curves.png from metrics.jsonl, the PlotLogger callback and `python -m trainer.plot`.

The runs are metrics.jsonl files written here by hand (every record kind the trainer writes, and
a torn last line), so nothing is trained.
"""

import json
import math
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from tests.conftest import run_cli, tiny_overrides
from trainer.errors import ConfigError
from trainer.reporting import plot
from trainer.reporting.plot import (
    PlotLogger,
    PlotLoggerConfig,
    curves_of,
    plot_runs,
    read_records,
    run_labels,
    sweep_jobs,
)

PROJECT = Path(__file__).resolve().parent.parent
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
FIGURE_WIDTH_PX = 1000


def log_record(step: int, loss: float) -> dict:
    return {
        "step": step,
        "train/loss": loss,
        "lr": 1e-3 * min(1.0, step / 20),
        "grad_norm": 0.8,
        "ms_per_step": 41.5,
        "tokens_per_second": 98000.0,
        "mfu": 0.012,
        "loss/entropy_multiplier": 1.02,
        "loss/wrong_entropy": 3.1,
        "time/forward_ms": 12.0,
        "mask/ratio": 0.3,
    }


def eval_record(step: int, loss: float, stages: int, stage: int) -> dict:
    record = {"step": step, "train/loss": loss, "val/loss": loss + 0.1}
    record |= {f"val/stage_{i}_loss": loss + 0.1 * i for i in range(stages)}
    return record | {"lr": 1e-3 * min(1.0, (step + 1) / 20), "stage/index": stage, "stage/stale_count": 0}


def run_records(steps: int = 200, stages: int = 3, log_interval: int = 10, eval_interval: int = 25) -> list[dict]:
    """A staged run: logs, evaluations, two stage changes, an unfreeze, a skipped step and a rollback
    (after which steps 110..130 are run and logged again)."""
    records, stage = [], 0
    for step in range(0, steps + 1):
        loss = 4.0 * math.exp(-step / 80) + 1.0
        if step and step % log_interval == 0:
            records.append(log_record(step, loss))
        if step % eval_interval == 0:
            records.append(eval_record(step, loss, stages, stage))
        if step in (75, 150) and stage < stages - 1:
            stage += 1
            records.append({"step": step, "event": "stage_advance", "stage/index": stage, "stage/stale_count": 2})
        if step == 100:
            records.append({"step": step, "event": "unfreeze", "lr": 1e-3, "lr_multiplier": 0.1})
        if step == 120:
            records.append({"step": step, "stability/event": "grads: skip", "check": "grads", "action": "skip"})
        if step == 130:
            records.append({"step": step, "stability/event": "grads: rollback", "check": "grads", "action": "rollback"})
            records.append({"step": 100, "stability/event": "rollback_done", "action": "rollback", "lr": 5e-4})
            records += [log_record(s, 9.0) for s in (110, 120, 130)]  # the re-run steps, logged again
    return records


def write_run(folder: Path, records: list[dict], overrides: list[str] | None = None, torn: bool = True) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    text = "".join(json.dumps(record) + "\n" for record in records)
    if torn:
        text += '{"step": 201, "train/lo'  # the line a kill cut short
    (folder / "metrics.jsonl").write_text(text)
    if overrides is not None:
        (folder / ".hydra").mkdir(exist_ok=True)
        (folder / ".hydra" / "overrides.yaml").write_text("".join(f"- {item}\n" for item in overrides))
    return folder


def read_png(path: Path):
    from matplotlib.image import imread

    assert path.read_bytes()[:8] == PNG_SIGNATURE
    image = imread(path)
    height, width, channels = image.shape
    assert width == FIGURE_WIDTH_PX and 400 <= height <= 1400 and channels in (3, 4)
    return image


def files_under(folder: Path) -> set[Path]:
    return {path for path in folder.rglob("*")}


# ---------------------------------------------------------------------------------------------
# Reading


def test_records_are_read_past_a_torn_line_and_sorted_into_curves(tmp_path):
    run = write_run(tmp_path / "run", run_records())
    records = read_records(run / "metrics.jsonl")
    assert records[-1]["step"] == 200  # the torn line is gone, nothing after it was invented
    curves = curves_of(records, "run")
    assert curves.train_loss.steps == list(range(10, 201, 10))
    # a step logged again after a rollback keeps the re-run's value
    assert curves.train_loss.values[curves.train_loss.steps.index(120)] == 9.0
    assert curves.val_loss.steps == list(range(0, 201, 25))
    assert sorted(curves.stage_losses) == [0, 1, 2]
    assert curves.stage_losses[2].values[0] == pytest.approx(5.0 + 0.2)
    assert curves.lr.steps == curves.train_loss.steps  # the log records' rates, not mixed with the evals'
    only_evals = curves_of([r for r in records if "val/loss" in r], "run")
    assert only_evals.lr.steps == curves.val_loss.steps
    # rollback_done (where the rollback landed) is not a second rollback
    assert curves.events == {"stage change": [75, 150], "unfreeze": [100], "skipped step": [120], "rollback": [130]}


def test_non_finite_values_become_gaps(tmp_path):
    records = [eval_record(0, 3.0, 1, 0), {**eval_record(25, 2.0, 1, 0), "val/loss": float("nan")}]
    curves = curves_of(read_records(write_run(tmp_path / "run", records) / "metrics.jsonl"), "run")
    assert curves.val_loss.steps == [0, 25] and math.isnan(curves.val_loss.values[1])


def test_labels_are_folder_names_with_overrides(tmp_path):
    a = write_run(tmp_path / "sweep_a" / "0", [], ["masking=span", "max_iters=200"])
    b = write_run(tmp_path / "sweep_b" / "1", [])
    assert run_labels([a, b]) == ["0: masking=span max_iters=200", "1"]
    c = write_run(tmp_path / "sweep_b" / "0", [])
    assert run_labels([a, c]) == ["sweep_a/0: masking=span max_iters=200", "sweep_b/0"]  # same names: with parents


def test_sweep_jobs_come_in_numeric_order(tmp_path):
    for name in ("10", "2", "0", "1"):
        write_run(tmp_path / "sweep" / name, [])
    (tmp_path / "sweep" / "3").mkdir()  # a job that wrote no metrics is not a run
    (tmp_path / "sweep" / "multirun.yaml").write_text("{}\n")
    assert [job.name for job in sweep_jobs(tmp_path / "sweep")] == ["0", "1", "2", "10"]


# ---------------------------------------------------------------------------------------------
# Drawing


def test_plot_is_a_png_with_a_panel_for_the_stages_only_when_there_are_stages(tmp_path):
    staged = plot_runs([write_run(tmp_path / "staged", run_records(stages=3))], tmp_path / "staged.png")
    plain_records = [{k: v for k, v in r.items() if not k.startswith("val/stage_")} for r in run_records()]
    plain = plot_runs([write_run(tmp_path / "plain", plain_records)], tmp_path / "plain.png")
    staged_height, plain_height = read_png(staged).shape[0], read_png(plain).shape[0]
    assert staged_height > plain_height + 200  # three panels against two
    assert not [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_an_empty_run_still_draws(tmp_path):
    read_png(plot_runs([write_run(tmp_path / "run", [], torn=False)], tmp_path / "empty.png"))


def test_a_failed_draw_leaves_the_previous_png_whole(tmp_path, monkeypatch):
    from matplotlib.figure import Figure

    run = write_run(tmp_path / "run", run_records())
    out = plot_runs([run], run / "curves.png")
    before = out.read_bytes()

    def torn_savefig(self, file, **kwargs):
        file.write(PNG_SIGNATURE + b"half an image")
        raise OSError("disk full")

    monkeypatch.setattr(Figure, "savefig", torn_savefig)
    with pytest.raises(OSError, match="disk full"):
        plot_runs([run], out)
    assert out.read_bytes() == before
    assert sorted(p.name for p in run.iterdir()) == ["curves.png", "metrics.jsonl"]  # no temporary file left


# ---------------------------------------------------------------------------------------------
# The callback

FAKE_TRAINER = SimpleNamespace()  # the callback reads its records from the file, nothing from the trainer


def test_config_checks_the_name_and_builds_in_the_run_folder(tmp_path):
    with pytest.raises(ConfigError, match="logger.plot.filename"):
        PlotLoggerConfig(filename="../curves.png")
    logger = PlotLoggerConfig().build(tmp_path)
    assert isinstance(logger, PlotLogger)
    assert (logger.metrics_path, logger.out) == (tmp_path / "metrics.jsonl", tmp_path / "curves.png")
    assert PlotLoggerConfig("c.png").build(tmp_path, "m.jsonl").metrics_path == tmp_path / "m.jsonl"


def wait_for(condition, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_callback_redraws_after_each_evaluation_and_at_the_end(tmp_path):
    records = run_records()
    first_half = [r for r in records if r["step"] <= 100]
    write_run(tmp_path, first_half, torn=False)
    logger = PlotLoggerConfig().build(tmp_path)
    out = tmp_path / "curves.png"

    logger.on_eval(FAKE_TRAINER, {})
    wait_for(lambda: logger.idle)
    first = out.read_bytes()
    first_mtime = out.stat().st_mtime_ns
    read_png(out)

    write_run(tmp_path, records, torn=True)  # the rest of the run, and a kill's torn line
    time.sleep(0.01)  # a coarse file-system clock still sees a newer write
    logger.on_eval(FAKE_TRAINER, {})
    logger.on_train_end(FAKE_TRAINER)
    assert "plot-logger" not in {thread.name for thread in threading.enumerate()}  # gone once training ended
    assert out.read_bytes() != first and out.stat().st_mtime_ns > first_mtime
    read_png(out)


def test_callback_never_makes_training_wait_and_draws_the_newest_records(tmp_path, monkeypatch):
    """Requests during a draw merge into one draw after it, which reads the newest records."""
    write_run(tmp_path, run_records(steps=50), torn=False)
    seen, started = [], threading.Event()

    def slow_plot(run_dirs, out, metrics_filename):
        seen.append(len(read_records(Path(run_dirs[0]) / metrics_filename)))
        started.set()
        time.sleep(1.0)  # longer than the three evaluations that come during it take

    monkeypatch.setattr(plot.logger, "plot_runs", slow_plot)
    logger = PlotLoggerConfig().build(tmp_path)
    durations = []
    for steps in (50, 100, 150, 200):
        write_run(tmp_path, run_records(steps=steps), torn=False)
        begin = time.perf_counter()
        logger.on_eval(FAKE_TRAINER, {})
        durations.append(time.perf_counter() - begin)
        started.wait(10)  # the first draw is under way before the next evaluations arrive
    assert max(durations) < 0.1
    wait_for(lambda: len(seen) == 2)
    full = len(run_records(steps=200))
    assert seen == [len(run_records(steps=50)), full]  # three requests, one draw, the newest data
    logger.on_train_end(FAKE_TRAINER)
    assert seen == [len(run_records(steps=50)), full, full]  # the final draw, synchronous


def test_a_failing_draw_is_one_line_and_training_goes_on(tmp_path, capfd):
    logger = PlotLoggerConfig().build(tmp_path)  # no metrics.jsonl: every draw fails
    logger.on_eval(FAKE_TRAINER, {})
    wait_for(lambda: logger.idle)
    logger.on_eval(FAKE_TRAINER, {})
    logger.on_train_end(FAKE_TRAINER)  # does not raise
    lines = capfd.readouterr().err.splitlines()
    assert len(lines) == 1  # the same failure three times: reported once
    assert lines[0].startswith("warning: ") and "curves.png not drawn: FileNotFoundError" in lines[0]
    assert not (tmp_path / "curves.png").exists()


# ---------------------------------------------------------------------------------------------
# The command


def run_command(*arguments: str, cwd: Path = PROJECT) -> subprocess.CompletedProcess:
    # the project on the path also when the command runs elsewhere (cwd decides the default out)
    env = {**os.environ, "PYTHONPATH": str(PROJECT)}
    return subprocess.run(
        [sys.executable, "-m", "trainer.plot", *map(str, arguments)],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def colour_present(image, colour) -> bool:
    """Whether some pixel has exactly `colour` (a line's centre is drawn in its own colour)."""
    import numpy as np

    rgb = np.round(image[..., :3] * 255).astype(int)
    target = np.round(np.array(colour[:3]) * 255).astype(int)
    return bool((rgb == target).all(axis=-1).any())


def test_command_overlays_runs_and_a_sweep_in_one_png(tmp_path):
    from matplotlib import colormaps

    single = write_run(tmp_path / "single", run_records(), ["mode=unmasking"])
    sweep = tmp_path / "multirun" / "sweep"
    for job, max_iters in enumerate((120, 160, 200)):
        write_run(sweep / str(job), run_records(steps=max_iters), [f"max_iters={max_iters}"])
    out = tmp_path / "all.png"

    result = run_command(single, sweep, f"out={out}")

    assert result.returncode == 0, result.stderr
    assert result.stderr == "" and "4 runs" in result.stdout
    image = read_png(out)
    tab10 = [colormaps["tab10"](i) for i in range(10)]
    assert all(colour_present(image, colour) for colour in tab10[:4])  # one colour per run: single + 3 jobs
    unused = tab10[4:7] + tab10[8:]  # (tab10[7] is a grey, like the anti-aliased edges of the grey legend lines)
    assert not any(colour_present(image, colour) for colour in unused)
    assert not (single / "curves.png").exists() and not (sweep / "curves.png").exists()


def test_command_default_out(tmp_path):
    run = write_run(tmp_path / "run", run_records())
    assert run_command(run).returncode == 0
    read_png(run / "curves.png")  # one run: its own folder

    other = write_run(tmp_path / "other", run_records(steps=100))
    assert run_command(run, other, cwd=tmp_path / "other").returncode == 0
    read_png(tmp_path / "other" / "curves.png")  # several: the current folder


@pytest.mark.parametrize(
    ("arguments", "named"),
    [
        ((), "RUN_DIR"),
        (("{tmp}/missing",), "missing"),
        (("{tmp}/empty",), "empty"),  # a folder without metrics.jsonl (nor run subfolders)
        (("{tmp}/run/metrics.jsonl",), "metrics.jsonl"),  # a file, not a folder
        (("{tmp}/run", "colour=red"), "colour=red"),
        (("{tmp}/run", "{tmp}/missing", "out={tmp}/x.png"), "missing"),  # a good run does not save a bad one
        (("{tmp}/run", "out={tmp}/x.pdf"), "out="),
        (("{tmp}/run", "out={tmp}/no/such/folder/x.png"), "out="),
        (("{tmp}/run", "out={tmp}/a.png", "out={tmp}/b.png"), "out="),
    ],
)
def test_bad_input_is_one_line_exit_2_and_nothing_written(tmp_path, arguments, named):
    write_run(tmp_path / "run", run_records())
    (tmp_path / "empty").mkdir()
    before = files_under(tmp_path)
    stray = PROJECT / "curves.png"
    assert not stray.exists()

    result = run_command(*(argument.format(tmp=tmp_path) for argument in arguments))

    assert result.returncode == 2
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and named in lines[0] and "allowed: " in lines[0]
    assert result.stdout == ""
    assert files_under(tmp_path) == before and not stray.exists()


def test_command_refuses_a_run_without_records_and_draws_a_run_named_twice_once(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "metrics.jsonl").write_text("")
    result = run_command(empty)
    assert result.returncode == 2 and result.stderr.startswith("error: ") and "holds no loss" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and not (empty / "curves.png").exists()
    run = write_run(tmp_path / "run", run_records(), ["mode=unmasking"])
    twice = run_command(run, run, f"out={tmp_path / 'twice.png'}")
    assert twice.returncode == 0 and "1 run" in twice.stdout


def test_a_run_named_in_cjk_draws_its_curves_without_glyph_warnings(tmp_path, corpus_file):
    """run_name=实验 where no installed font may have the glyphs: the run trains, curves.png is drawn
    (with a font that has them, or boxes), and stderr holds none of matplotlib's per-glyph warnings."""
    args = tiny_overrides(corpus_file, "max_iters=4", "eval_interval=4", "logger=[console,jsonl,plot]")
    result = run_cli(*args, 'run_name="实验"', cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    run_dir = tmp_path / "outputs" / "实验"
    read_png(run_dir / "curves.png")  # a whole PNG of the figure's width
    assert not list(run_dir.glob(".*.tmp"))
