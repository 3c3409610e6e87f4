"""What one full evaluation costs, next to one training step, so eval_interval can be chosen knowingly.

    python bench/eval_cost.py [--model base] [--block-size 1024] [--batch-size 16] [--eval-iters 20]

Builds the trainer for `stages=canonical14` at the reference size (model=base, block 1024,
batch 16, eval_iters 20) on the built-in corpus, times a few training steps and one complete
evaluation (eval_iters fresh training batches + the fixed validation set over all 14 stages),
and prints both with their ratio.
"""

import argparse
import io
import tempfile
import time
from pathlib import Path

from hydra import compose, initialize_config_dir
from rich.console import Console

from trainer.build import build_trainer
from trainer.cli.main import CONF_DIR
from trainer.config import register_schemas
from trainer.plan import plan_job


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="base")
    parser.add_argument("--block-size", type=int, default=1024)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--eval-iters", type=int, default=20)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()

    register_schemas()
    overrides = [
        "stages=canonical14",
        f"model={args.model}",
        f"block_size={args.block_size}",
        f"batch_size={args.batch_size}",
        f"eval_iters={args.eval_iters}",
        f"system={args.device}",
        "logger=[]",
        "data.prefetch=2",
    ]
    with initialize_config_dir(version_base="1.3", config_dir=CONF_DIR):
        cfg = compose(config_name="config", overrides=overrides)
    with tempfile.TemporaryDirectory() as run_dir:
        trainer = build_trainer(plan_job(cfg, Path(run_dir)), Console(file=io.StringIO()))
        trainer.train_step()  # warm-up: first-call allocations and the producer thread
        trainer.optimization.step()
        start = time.perf_counter()
        for _ in range(args.steps):
            trainer.train_step().loss.item()
            trainer.optimization.step()
        step_s = (time.perf_counter() - start) / args.steps
        start = time.perf_counter()
        trainer.evaluate()
        eval_s = time.perf_counter() - start
        trainer.data.stream.close()
        samples = sum(b.inputs.size(0) for b in trainer.data.validation_set)

    print(
        f"\nstages=canonical14 model={args.model} block={args.block_size} batch={args.batch_size} "
        f"eval_iters={args.eval_iters} ({samples} validation samples, device {trainer.runtime.device})"
    )
    print(f"{'':<28}{'seconds':>10}{'in train steps':>16}")
    print(f"{'one training step':<28}{step_s:>10.2f}{1.0:>16.1f}")
    print(f"{'one full evaluation':<28}{eval_s:>10.2f}{eval_s / step_s:>16.1f}")
    print(f"\nat eval_interval=N the evaluation adds {100 * eval_s / step_s:.0f}/N % to the training time")


if __name__ == "__main__":
    main()
