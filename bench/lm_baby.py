"""nanoGPT's CPU recipe ("baby GPT" on tiny Shakespeare) through the trainer, end to end.

    python bench/lm_baby.py [--data PATH] [--repeats N]

Runs `python -m trainer experiment=shakespeare_lm_cpu data.path=PATH` and prints the final val
loss and the wall time. Reference on this kind of machine: nanoGPT's own train.py with the same
recipe took 112 s and reached val 1.886. Before and after, it times the same model and batch
shape in a bare loop (forward, backward, clip, AdamW step; no evaluation, logging, data thread
or checks), so the trainer's own overhead shows as a ratio that depends less on how busy the
machine is. `--seeds` runs the recipe once per seed: the final val loss varies by a few hundredths
between seeds.
"""

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from models import GPT, GPTConfig

ROOT = Path(__file__).resolve().parent.parent
REFERENCE = {"val_loss": 1.886, "wall_s": 112.0}


def run_trainer(data: Path | None, seed: int) -> dict:
    with tempfile.TemporaryDirectory() as run_dir:
        start = time.perf_counter()
        subprocess.run(
            [
                sys.executable,
                "-m",
                "trainer",
                "experiment=shakespeare_lm_cpu",
                *(["data=text", f"data.path={data}"] if data else []),
                f"seed={seed}",
                f"hydra.run.dir={run_dir}",
                "logger=[jsonl]",
            ],
            check=True,
            cwd=ROOT,
        )
        wall = time.perf_counter() - start
        records = [json.loads(line) for line in (Path(run_dir) / "metrics.jsonl").read_text().splitlines()]
    logs = [r for r in records if "ms_per_step" in r]
    return {
        "val_loss": records[-1]["val/loss"],
        "wall_s": wall,
        "ms_per_step": sum(r["ms_per_step"] for r in logs) / len(logs),
    }


def bare_loop_ms_per_step(steps: int = 300) -> float:
    """The recipe's model and optimizer in the plainest possible loop, on random tokens."""
    torch.manual_seed(0)
    model = GPT(
        GPTConfig(
            vocab_size=80, block_size=64, n_layer=4, n_head=4, n_embd=128, attention="causal", positions="learned"
        )
    )
    optimizer = torch.optim.AdamW(model.param_groups(0.1), lr=1e-3, betas=(0.9, 0.99))
    x, y = torch.randint(0, 65, (12, 64)), torch.randint(0, 65, (12, 64))
    for i in range(steps + 20):
        if i == 20:
            start = time.perf_counter()
        loss = F.cross_entropy(model(x).flatten(0, 1), y.flatten())
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return 1000 * (time.perf_counter() - start) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    shipped = ROOT.parent / "shared" / "data" / "tinyshakespeare.txt"  # nanoGPT's input.txt, where it is at hand
    parser.add_argument(
        "--data", type=Path, default=shipped if shipped.is_file() else None, help="none: built-in plays"
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[1337])
    args = parser.parse_args()
    # the bare loop runs before and after the trainer, so a change in machine load shows in its spread
    bare_before = bare_loop_ms_per_step()
    runs = [run_trainer(args.data.resolve() if args.data else None, seed) for seed in args.seeds]
    bare_after = bare_loop_ms_per_step()
    bare = (bare_before + bare_after) / 2
    print(f"\n{'run':<22}{'val loss':>10}{'wall s':>10}{'ms/step':>10}{'vs bare loop':>14}")
    print(f"{'nanoGPT (reference)':<22}{REFERENCE['val_loss']:>10.3f}{REFERENCE['wall_s']:>10.1f}{'':>10}{'':>14}")
    for seed, run in zip(args.seeds, runs):
        print(
            f"{'trainer seed=' + str(seed):<22}{run['val_loss']:>10.3f}{run['wall_s']:>10.1f}"
            f"{run['ms_per_step']:>10.1f}{run['ms_per_step'] / bare:>13.2f}x"
        )
    print(
        f"{'bare loop':<22}{'':>10}{'':>10}{bare:>10.1f}{1.0:>13.2f}x  "
        f"(before {bare_before:.1f}, after {bare_after:.1f} ms/step)"
    )


if __name__ == "__main__":
    main()
