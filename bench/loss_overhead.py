"""What each loss modifier costs: training step time with it against `loss=plain`.

    python bench/loss_overhead.py [--steps 20] [--rounds 6]

Builds the default run (unmasking, model=small, batch 32 x 128, CPU) once per variant of the
`loss` group and times optimizer steps (forward, backward, clip, AdamW) from the middle of the run,
where the entropy penalty is ramping. The variants take turns for several rounds, in alternating
order, and each keeps its median, so a change in machine load hits them all alike; the table shows
the ratios to `loss=plain`. Target: each <= 1.05. On a busy 2-core machine the ratios of identical
work spread by about +-3%.
"""

import argparse
import io
import statistics
import tempfile
import time
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir
from rich.console import Console

from trainer.build import build_trainer
from trainer.cli.main import CONF_DIR
from trainer.config import register_schemas
from trainer.guard import GOOD
from trainer.plan import plan_job

VARIANTS = {
    "plain": [],
    "label_smoothing=0.1": ["loss.label_smoothing=0.1"],
    "entropy_penalty.max=0.5": ["loss.entropy_penalty.max=0.5"],
    "weight_by_mask_ratio": ["loss.weight_by_mask_ratio=true"],
    "reduction=sample": ["loss.reduction=sample"],
    "all four": [
        "loss.label_smoothing=0.1",
        "loss.entropy_penalty.max=0.5",
        "loss.weight_by_mask_ratio=true",
        "loss.reduction=sample",
    ],
}
START_STEP = 300  # the middle of the default 600 steps: pi is above 0


def build(overrides: list[str], run_dir: Path):
    with initialize_config_dir(version_base="1.3", config_dir=CONF_DIR):
        cfg = compose(config_name="config", overrides=["system=cpu", "logger=[]", *overrides])
    trainer = build_trainer(plan_job(cfg, run_dir), Console(file=io.StringIO()))
    trainer.state.step = START_STEP
    return trainer


def ms_per_step(trainer, steps: int) -> float:
    """Milliseconds per optimizer step, after two warm-up steps."""
    for i in range(steps + 2):
        if i == 2:
            start = time.perf_counter()
        trainer.apply(GOOD, trainer.train_step())
    return 1000 * (time.perf_counter() - start) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=6)
    args = parser.parse_args()
    register_schemas()
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as folder:
        trainers = {
            name: build(overrides, Path(folder) / str(i)) for i, (name, overrides) in enumerate(VARIANTS.items())
        }
        times = {name: [] for name in VARIANTS}
        for round_ in range(args.rounds):
            order = list(trainers.items())
            for name, trainer in order if round_ % 2 == 0 else reversed(order):  # no variant always runs first
                trainer.state.step = START_STEP
                times[name].append(ms_per_step(trainer, args.steps))
        for trainer in trainers.values():
            trainer.data.stream.close()
    median = {name: statistics.median(values) for name, values in times.items()}
    print(f"\n{'loss':<26}{'ms/step':>10}{'vs plain':>10}   (median of {args.rounds} rounds of {args.steps} steps)")
    for name, value in median.items():
        print(f"{name:<26}{value:>10.1f}{value / median['plain']:>9.3f}x")


if __name__ == "__main__":
    main()
