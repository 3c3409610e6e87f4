"""What the stability checks cost: the same training with stability=default and stability=off.

    python bench/stability_overhead.py [--steps 200] [--rounds 3]

model=small on the CPU, unmasking on the built-in corpus. The two settings alternate (off,
default, off, default, ...) so a change in machine load hits both alike; the table gives each
round's step times and their ratio. Target: default at most 2% slower than off.
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
from trainer.reporting.callbacks import Callback


class StepClock(Callback):
    """Wall time from the end of the first step to the end of the last (no evaluation inside)."""

    def on_step_end(self, trainer, metrics):
        if trainer.state.step == 1:
            self.start = time.perf_counter()
        self.end, self.steps = time.perf_counter(), trainer.state.step - 1


def ms_per_step(stability: str, steps: int) -> float:
    overrides = [
        f"stability={stability}",
        "model=small",
        "system=cpu",
        f"max_iters={steps}",
        f"eval_interval={steps}",
        "eval_iters=1",
        "log_interval=50",
        "logger=[]",
        "masking=sticky",  # one strategy, trained alone
    ]
    with initialize_config_dir(version_base="1.3", config_dir=CONF_DIR):
        cfg = compose(config_name="config", overrides=overrides)
    with tempfile.TemporaryDirectory() as run_dir:
        trainer = build_trainer(plan_job(cfg, Path(run_dir)), Console(file=io.StringIO()))
        clock = StepClock()
        trainer.callbacks.add_callback(clock)
        trainer.fit()
    return 1000 * (clock.end - clock.start) / clock.steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    register_schemas()
    rows = []
    for round_ in range(1, args.rounds + 1):
        off = ms_per_step("off", args.steps)
        default = ms_per_step("default", args.steps)
        rows.append((round_, off, default, default / off))

    print(f"\nmodel=small, cpu, {args.steps} steps per run")
    print(f"{'round':>6}{'off ms/step':>14}{'default ms/step':>18}{'ratio':>8}")
    for round_, off, default, ratio in rows:
        print(f"{round_:>6}{off:>14.1f}{default:>18.1f}{ratio:>8.3f}")
    ratio = statistics.median(r[3] for r in rows)
    print(f"median ratio default/off: {ratio:.3f} ({100 * (ratio - 1):+.1f}%; target <= +2%)")


if __name__ == "__main__":
    main()
