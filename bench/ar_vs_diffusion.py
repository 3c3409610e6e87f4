"""A language model against a masked-diffusion model at equal compute, on the whole test split.

    python bench/ar_vs_diffusion.py [--steps 2000] [--ema 0.999] [--draws 4] [--jobs 2]

Trains `experiment=shakespeare_lm_cpu` (nanoGPT's CPU recipe: 4 layers, 4 heads, 128 dims, block
64, batch 12) and `experiment=shakespeare_diffusion_cpu` (the same model with RoPE, trained on light
BERT-noise rows and ELBO rows) for the same steps, hence the same tokens, on the built-in corpus with
5% held out as a test split (data.test_fraction) and an average of the weights (optim.ema_decay).
Then `python -m trainer.evaluate split=test` scores each on every test token once: the language
model's exact NLL, the diffusion model's ELBO (`--draws` estimates per window) with its standard
error, each with the averaged and the trained weights. One table: bits per character, the ratio
bound / language model, and the training wall time (two trainings at a time, one thread each).
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MODELS = {"language model": "experiment=shakespeare_lm_cpu", "masked diffusion": "experiment=shakespeare_diffusion_cpu"}


def run(command: list[str], threads: int) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    done = subprocess.run([sys.executable, "-m", *command], cwd=ROOT, env=env, capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"{' '.join(command)} failed:\n{done.stdout[-2000:]}{done.stderr[-2000:]}")


def train_and_evaluate(preset: str, folder: Path, args, threads: int) -> dict:
    """The training wall time and the test-split records (averaged and trained weights) of one model."""
    overrides = [
        preset,
        "data=shakespeare",
        "data.test_fraction=0.05",
        f"optim.ema_decay={args.ema}",
        f"max_iters={args.steps}",
        f"optim.lr_decay_iters={args.steps}",
        f"optim.warmup_iters={min(100, args.steps // 10)}",
        f"eval_interval={min(250, args.steps)}",
        "logger=[jsonl]",
        "sample.num_samples=0",
        f"hydra.run.dir={folder}",
    ]
    started = time.perf_counter()
    run(["trainer", *overrides], threads)
    wall = time.perf_counter() - started
    for ema in ("true", "false"):
        run(["trainer.evaluate", f"checkpoint={folder}", "split=test", f"draws={args.draws}", f"ema={ema}"], threads)
    records = [json.loads(line) for line in (folder / "evaluations.jsonl").read_text().splitlines()]
    return {"wall": wall, "averaged": records[-2], "trained": records[-1]}


def print_table(results: dict[str, dict], args) -> None:
    print(f"\n{args.steps} steps each, the same tokens; test split of the built-in corpus, every token once")
    print(f"{'model':<18}{'weights':<10}{'bits/char':>10}{'+-':>8}{'bound/AR':>10}{'train s':>9}")
    for weights in ("averaged", "trained"):
        reference = results["language model"][weights]["bits_per_character"]
        for name, result in results.items():
            record = result[weights]
            error = record.get("standard_error_nats")
            shown = f"{error / 0.6931471805599453:>8.4f}" if error is not None else f"{'exact':>8}"
            ratio = record["bits_per_character"] / reference
            print(
                f"{name:<18}{weights:<10}{record['bits_per_character']:>10.4f}{shown}{ratio:>10.3f}{result['wall']:>9.0f}"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument(
        "--ema", type=float, default=0.999, help="optim.ema_decay (the papers' 0.9999 needs longer runs)"
    )
    parser.add_argument("--draws", type=int, default=4, help="ELBO estimates per test window")
    parser.add_argument("--jobs", type=int, default=2, help="trainings at a time (each on one thread if > 1)")
    args = parser.parse_args()
    threads = 1 if args.jobs > 1 else (os.cpu_count() or 1)
    with tempfile.TemporaryDirectory() as work, ThreadPoolExecutor(args.jobs) as pool:
        futures = {
            name: pool.submit(train_and_evaluate, preset, Path(work) / name.replace(" ", "_"), args, threads)
            for name, preset in MODELS.items()
        }
        results = {name: future.result() for name, future in futures.items()}
    print_table(results, args)


if __name__ == "__main__":
    main()
