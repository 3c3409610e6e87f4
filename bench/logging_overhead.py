"""What the loggers cost: training wall time with every logger on against the console alone.

    python bench/logging_overhead.py [--steps 75] [--rounds 3]

Trains the default run (unmasking, model=small, batch 32 x 128, CPU, an evaluation every 25 steps)
for `--steps` steps with `logger=[console]` and with `logger=[console,jsonl,plot,wandb]` (wandb
offline), in-process, taking turns in alternating order for several rounds; each keeps its median
wall time of `fit()`, so both see the same machine load. Evaluations, checkpoints and the step work
are the same in both; the difference is what logging costs: the records, the JSONL file, the
curves redrawn after every evaluation, the wandb run. Target: <= 1.02.
"""

import argparse
import io
import statistics
import tempfile
import time
from pathlib import Path

from hydra import compose, initialize_config_dir
from rich.console import Console

from trainer.build import build_trainer
from trainer.cli.main import CONF_DIR
from trainer.config import register_schemas
from trainer.plan import plan_job

VARIANTS = {
    "console": "logger=[console]",
    "console+jsonl+plot+wandb": "logger=[console,jsonl,plot,wandb]",
}


def fit_seconds(logger: str, steps: int, run_dir: Path) -> float:
    with initialize_config_dir(version_base="1.3", config_dir=CONF_DIR):
        cfg = compose(config_name="config", overrides=["system=cpu", logger, f"max_iters={steps}"])
    trainer = build_trainer(plan_job(cfg, run_dir), Console(file=io.StringIO(), width=160))
    start = time.perf_counter()
    trainer.fit()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=75)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    register_schemas()
    seconds = {name: [] for name in VARIANTS}
    with tempfile.TemporaryDirectory() as folder:
        fit_seconds(VARIANTS["console"], 2, Path(folder) / "warm-up")  # imports, the corpus cache
        for round_ in range(args.rounds):
            order = list(VARIANTS.items()) if round_ % 2 == 0 else list(VARIANTS.items())[::-1]
            for name, logger in order:
                seconds[name].append(fit_seconds(logger, args.steps, Path(folder) / f"{name}-{round_}"))
    median = {name: statistics.median(values) for name, values in seconds.items()}
    base = median["console"]
    print(f"\n{'loggers':<28}{'fit s':>8}{'vs console':>12}   (median of {args.rounds} runs of {args.steps} steps)")
    for name, value in median.items():
        print(f"{name:<28}{value:>8.1f}{value / base:>11.3f}x")


if __name__ == "__main__":
    main()
