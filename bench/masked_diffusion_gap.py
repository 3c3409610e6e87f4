"""The likelihood gap between masked diffusion and a language model at nanoGPT's CPU recipe size.

    python bench/masked_diffusion_gap.py [--data PATH] [--steps N] [--jobs 2] [--rows NAME ...]

Trains every row through the trainer (`python -m trainer experiment=shakespeare_lm_cpu ...`: 4
layers, 4 heads, 128 dims, block 64, batch 12, lr 1e-3) and prints one table: the language model's
val/bpc (exact bits per character), and for every masked-diffusion (mode=unmasking) row its
val/bpc_bound (the MDLM ELBO of trainer/objectives/likelihood.py, in bits per character), its
val/loss (cross-entropy over the positions its own validation masking selected) and the ratio
bound / language model. The rows: the unmasking defaults (the easy_to_hard curriculum of random
and sticky masking with BERT-style corruption, loss.reduction=token) and random masking matched to
the bound (every ratio up to 1, [MASK] only, loss.reduction=sample), with learned and RoPE
positions; then, with RoPE: masking=elbo (n ~ U{1..T} masked positions per row, stratified across
the batch or not), light random masking with and without the BERT-style noise, and
experiment=shakespeare_diffusion_cpu (light BERT-noise rows and elbo rows in every batch).
The training runs differ by a few hundredths of a nat between seeds (up to 0.1 seen): one seed per
row here. `--jobs 2` runs two trainings at a time, each on one thread.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RECIPE = ["logger=[jsonl]", "sample.num_samples=0"]
LM = ["experiment=shakespeare_lm_cpu"]  # learned positions, as in nanoGPT
UNMASKING = [*LM, "mode=unmasking"]
MATCHED = [
    "masking=random",
    "masking.max_masked_ratio=1",
    "masking.corruption.mask_prob=1",
    "masking.corruption.random_prob=0",
    "loss.reduction=sample",
]
ELBO = ["masking=elbo", "loss.reduction=sample"]
# the first stage of the defaults' curriculum (where a 2000-step run stays) without the BERT-style noise
LOW_ABSORBING = [
    "masking=random",
    "masking.max_masked_ratio=0.3",
    "masking.corruption.mask_prob=1",
    "masking.corruption.random_prob=0",
]
ROWS = {
    "language model (AR)": LM,
    "unmasking defaults, learned": UNMASKING,
    "unmasking defaults, rope": [*UNMASKING, "model.positions=rope"],
    "matched random, learned": [*UNMASKING, *MATCHED],
    "matched random, rope": [*UNMASKING, *MATCHED, "model.positions=rope"],
    "elbo, rope": [*UNMASKING, *ELBO, "model.positions=rope"],
    "elbo unstratified, rope": [*UNMASKING, *ELBO, "masking.stratified=false", "model.positions=rope"],
    "random r<=0.3 [MASK] only, rope": [*UNMASKING, *LOW_ABSORBING, "model.positions=rope"],
    "random r<=1 BERT noise, rope": [
        *UNMASKING,
        "masking=random",
        "masking.max_masked_ratio=1",
        "model.positions=rope",
    ],
    "r<=0.3 BERT + elbo rows, rope": ["experiment=shakespeare_diffusion_cpu"],  # the preset
}


def schedule(steps: int) -> list[str]:
    """The recipe's run length, cosine decay and evaluation cadence scaled to `steps`."""
    return [
        f"max_iters={steps}",
        f"optim.lr_decay_iters={steps}",
        f"optim.warmup_iters={min(100, steps // 10)}",
        f"eval_interval={min(250, steps)}",
    ]


def train(overrides: list[str], data: Path, steps: int, threads: int) -> dict:
    """The final evaluation's metrics of one training run."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    with tempfile.TemporaryDirectory() as run_dir:
        args = [*RECIPE, *overrides, *schedule(steps), "data=text", f"data.path={data}", f"hydra.run.dir={run_dir}"]
        done = subprocess.run(
            [sys.executable, "-m", "trainer", *args], cwd=ROOT, env=env, capture_output=True, text=True
        )
        if done.returncode:
            raise RuntimeError(f"{' '.join(overrides)} failed:\n{done.stdout[-2000:]}{done.stderr[-2000:]}")
        records = [json.loads(line) for line in (Path(run_dir) / "metrics.jsonl").read_text().splitlines()]
    return [r for r in records if "val/loss" in r][-1]


def print_table(results: dict[str, dict], steps: int) -> None:
    ar_bpc = results.get("language model (AR)", {}).get("val/bpc")
    print(f"\n{steps} steps each; bits per character on the validation split (bound: masked-diffusion ELBO)")
    print(f"{'row':<30}{'val/bpc':>9}{'bpc_bound':>11}{'nats/char':>11}{'val/loss':>10}{'bound/AR':>10}")
    for name, metrics in results.items():
        bpc = metrics.get("val/bpc_bound", metrics.get("val/bpc"))
        nll = metrics.get("val/nll_bound", metrics["val/loss"] if "val/bpc" in metrics else None)
        ratio = f"{bpc / ar_bpc:>10.3f}" if ar_bpc else f"{'':>10}"
        cells = [metrics.get("val/bpc"), metrics.get("val/bpc_bound"), nll, metrics["val/loss"]]
        widths = [9, 11, 11, 10]
        text = "".join(f"{c:>{w}.3f}" if c is not None else f"{'-':>{w}}" for c, w in zip(cells, widths))
        print(f"{name:<30}{text}{ratio}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "tinyshakespeare.txt")
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--jobs", type=int, default=2, help="trainings at a time (each on one thread if > 1)")
    parser.add_argument("--rows", nargs="+", choices=list(ROWS), default=list(ROWS))
    args = parser.parse_args()
    threads = 1 if args.jobs > 1 else (os.cpu_count() or 1)
    data = args.data.resolve()
    with ThreadPoolExecutor(args.jobs) as pool:
        futures = {name: pool.submit(train, ROWS[name], data, args.steps, threads) for name in args.rows}
        results = {name: future.result() for name, future in futures.items()}
    print_table(results, args.steps)


if __name__ == "__main__":
    main()
