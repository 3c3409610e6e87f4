"""Restart drill: stop a small run at random moments, resume it, and check that it ends exactly as
if it had never been stopped.

    python bench/restart_drill.py [--kills 20] [--terms 5] [--seed 0] [--keep DIR]

A reference run trains without interruption, keeping every checkpoint. Each trial starts the same
run in a folder of its own and stops it in one of four ways:

  kill@step     SIGKILL at a random moment after a random step
  kill@write    SIGKILL while a checkpoint is being written (its temporary file exists)
  kill@commit   SIGKILL right after a checkpoint file appears, as the line and best.pt are updated
  term@step     SIGTERM after a random step (pre-emption: the trainer saves, exits with 143)

then `resume=auto` runs it to the end. The table shows, per trial, the step of the checkpoint the
resume loaded (`fresh`: none was complete yet) and whether

  loaded ok     that checkpoint equals the reference's of the same step (neither torn nor from
                another line); for a pre-emption checkpoint, whether it is the one the stop named
  params        the final parameters and train state equal the uninterrupted run's, bit for bit
  metrics       metrics.jsonl holds each record of the uninterrupted run once, with equal values
  best.pt       best.pt holds the uninterrupted run's best state
"""

import argparse
import json
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
MAX_ITERS = 60
RUN = [
    "debug=smoke",
    f"max_iters={MAX_ITERS}",
    "eval_interval=5",
    "eval_iters=2",
    "log_interval=1",
    "model.dropout=0.1",  # the global RNG state must survive the restart too
    "gradient_accumulation_steps=2",
    "checkpoint.keep_last=2",
]
TIMING = {"ms_per_step", "tokens_per_second", "mfu"}  # with time/*: the only values that may differ between runs
RESUMED = re.compile(r"resumed from (\S+) at step (\d+)")
STOPPED = re.compile(r"stopped by SIGTERM at step (\d+): checkpoint (\S+);")


@dataclass
class Trial:
    how: str
    moment: str = ""
    exit_code: int | None = None
    resumed: str = "fresh"
    loaded_ok: bool | None = None
    params: bool = False
    metrics: str = ""
    best: bool = False


def trainer(run_dir: Path, *extra: str) -> subprocess.Popen:
    with open(run_dir.with_suffix(".log"), "a") as log:  # the child keeps its own copy of the file
        return subprocess.Popen(
            [sys.executable, "-m", "trainer", *RUN, *extra, f"hydra.run.dir={run_dir}"],
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
        )


def last_step(run_dir: Path) -> int:
    """The step of the newest complete record in metrics.jsonl (-1 before the first)."""
    try:
        lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    except FileNotFoundError:
        return -1
    for line in reversed(lines):
        try:
            return json.loads(line)["step"]
        except json.JSONDecodeError:
            continue
    return -1


def wait_until(process: subprocess.Popen, ready, poll_s: float = 0.0005) -> bool:
    """Poll `ready()` until it holds; False if the process ended first."""
    while not ready():
        if process.poll() is not None:
            return False
        time.sleep(poll_s)
    return True


def stop(run_dir: Path, how: str, rng: random.Random) -> tuple[str, int]:
    """Start the run and stop it the way `how` says; returns the moment and the exit code."""
    process = trainer(run_dir)
    checkpoints = run_dir / "checkpoints"
    if how in ("kill@step", "term@step"):
        target = rng.randrange(1, MAX_ITERS - 1)
        wait_until(process, lambda: last_step(run_dir) >= target)
        time.sleep(rng.uniform(0, 0.03))  # anywhere within the following step
        moment = f"after step {last_step(run_dir)}"
    else:
        target = rng.randrange(5, MAX_ITERS, 5)
        name = f".ckpt_{target:07d}.pt.tmp" if how == "kill@write" else f"ckpt_{target:07d}.pt"
        wait_until(process, lambda: (checkpoints / name).exists())
        writing = (checkpoints / f".ckpt_{target:07d}.pt.tmp").exists()
        moment = f"ckpt {target} " + ("being written" if writing else "just written")
    process.send_signal(signal.SIGKILL if how.startswith("kill") else signal.SIGTERM)
    return moment, process.wait()


def same_tensors(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def same_state(path: Path, reference: Path) -> bool:
    mine, theirs = (torch.load(p, weights_only=True) for p in (path, reference))
    return same_tensors(mine["model"], theirs["model"]) and mine["state"] == theirs["state"]


def metric_records(run_dir: Path) -> list[dict]:
    return [
        {k: v for k, v in json.loads(line).items() if k not in TIMING and not k.startswith("time/")}
        for line in (run_dir / "metrics.jsonl").read_text().splitlines()
    ]


def compare_metrics(run_dir: Path, reference: list[dict]) -> str:
    records = metric_records(run_dir)
    keys = [(r["step"], tuple(sorted(r))) for r in records]
    repeated = len(keys) - len(set(keys))
    if repeated:
        return f"{repeated} repeated"
    return "once, equal" if records == reference else "once, differ"


def run_trial(folder: Path, how: str, reference_dir: Path, rng: random.Random) -> Trial:
    trial = Trial(how)
    trial.moment, trial.exit_code = stop(folder, how, rng)
    stopped = STOPPED.search(folder.with_suffix(".log").read_text())
    # the checkpoints as the stop left them: the resume may rotate away the one it loads
    snapshot = folder.with_name(folder.name + "-stopped")
    if (folder / "checkpoints").is_dir():
        shutil.copytree(folder / "checkpoints", snapshot)
    resumed = trainer(folder, "resume=auto")
    if resumed.wait() != 0:
        trial.metrics = f"resume failed ({resumed.returncode})"
        return trial
    log = folder.with_suffix(".log").read_text()
    loaded = RESUMED.search(log)
    if loaded is not None:
        path, step = Path(loaded.group(1)), int(loaded.group(2))
        trial.resumed = str(step)
        reference = reference_dir / "checkpoints" / path.name
        if reference.exists():
            trial.loaded_ok = same_state(snapshot / path.name, reference)
        else:  # a pre-emption checkpoint between evaluations: the reference has none of that step
            trial.loaded_ok = stopped is not None and Path(stopped.group(2)) == path
    final = f"ckpt_{MAX_ITERS:07d}.pt"
    trial.params = same_state(folder / "checkpoints" / final, reference_dir / "checkpoints" / final)
    trial.metrics = compare_metrics(folder, metric_records(reference_dir))
    trial.best = same_state(folder / "checkpoints" / "best.pt", reference_dir / "checkpoints" / "best.pt")
    return trial


def mark(value: bool | None) -> str:
    return "-" if value is None else ("yes" if value else "NO")


def print_table(trials: list[Trial], stray: int, seconds: float) -> None:
    header = f"| {'#':>2} | {'stop':<11} | {'moment':<24} | {'exit':>4} | {'resumed':>7} | loaded ok | params "
    print(header + "| metrics      | best.pt |")
    print("|" + "|".join("-" * len(cell) for cell in header.split("|")[1:]) + "|--------------|---------|")
    for number, t in enumerate(trials, 1):
        print(
            f"| {number:>2} | {t.how:<11} | {t.moment:<24} | {t.exit_code:>4} | {t.resumed:>7} | "
            f"{mark(t.loaded_ok):<9} | {mark(t.params):<6} | {t.metrics:<12} | {mark(t.best):<7} |"
        )
    good = sum(t.params and t.best and t.loaded_ok is not False and t.metrics == "once, equal" for t in trials)
    print(f"\n{good}/{len(trials)} trials ended exactly as the uninterrupted run; {stray} stray temporary files")
    print(f"({seconds:.0f} s)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--kills", type=int, default=20, help="SIGKILL trials (a fifth while writing, a fifth right after)"
    )
    parser.add_argument("--terms", type=int, default=5, help="SIGTERM trials")
    parser.add_argument("--seed", type=int, default=0, help="chooses the moments")
    parser.add_argument("--keep", type=Path, help="keep the run folders here (default: a temporary folder)")
    args = parser.parse_args()
    rng = random.Random(args.seed)
    work = Path(tempfile.mkdtemp(prefix="restart_drill_")) if args.keep is None else args.keep
    work.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    reference = work / "reference"
    if trainer(reference, f"checkpoint.keep_last={MAX_ITERS}").wait() != 0:
        sys.exit(f"the reference run failed: see {reference.with_suffix('.log')}")
    plans = ["kill@write", "kill@commit"] * (args.kills // 5) + ["term@step"] * args.terms
    plans += ["kill@step"] * (args.kills - 2 * (args.kills // 5))
    rng.shuffle(plans)
    trials = []
    for number, how in enumerate(plans, 1):
        trials.append(run_trial(work / f"trial{number:02d}", how, reference, rng))
        print(f"trial {number}/{len(plans)}: {trials[-1]}", file=sys.stderr)
    stray = sum(1 for _ in work.glob("trial??/checkpoints/.*.tmp"))
    print_table(trials, stray, time.perf_counter() - start)
    if args.keep is None:
        shutil.rmtree(work)


if __name__ == "__main__":
    main()
