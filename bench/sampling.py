"""Sampling speed of both generative modes, and what the likelihood bound adds to an evaluation.

    python bench/sampling.py [--repeats 3] [--samples 1 8 32]

At the default size (model=small, block_size=128, the built-in corpus, CPU unless --device cuda)
it builds a language model and an unmasking model (freshly initialised: speed does not depend on
what a model learnt), draws `--samples` samples of a full block with each (the language model:
one forward per character; unmasking: `steps`=32 forwards of the whole block), and prints the
generated characters per second. Then it times one evaluation of the unmasking run without the
bound (mode.bound_draws=0) against the bound's own passes (bound_draws 1, 2, 4), and prints the
bound's cost relative to that evaluation. Times are medians of `--repeats` alternating rounds.
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
from trainer.objectives.likelihood import nll_bound, originals
from trainer.plan import plan_job
from trainer.sampling.generate import canvas, generate
from trainer.sampling.settings import Sampling, SamplingConfig


def build(mode: str, device: str, run_dir: str):
    overrides = [f"mode={mode}", f"system={device}", "logger=[]", "sample.num_samples=0", "data.prefetch=1"]
    with initialize_config_dir(version_base="1.3", config_dir=CONF_DIR):
        cfg = compose(config_name="config", overrides=overrides)
    trainer = build_trainer(plan_job(cfg, Path(run_dir) / mode), Console(file=io.StringIO()))
    trainer.data.stream.close()
    return trainer


def timed(function, *args) -> float:
    """Seconds of `function(*args)`; a tensor result is read back, so a GPU has finished it."""
    start = time.perf_counter()
    result = function(*args)
    if hasattr(result, "cpu"):
        result.cpu()
    return time.perf_counter() - start


def sampling_rows(trainers: dict, counts: list[int], repeats: int) -> list[tuple]:
    rows = []
    for count in counts:
        settings = SamplingConfig(num_samples=count)
        times = {mode: [] for mode in trainers}
        for _ in range(repeats):  # alternating, so a busy moment of the machine hits both modes
            for mode, trainer in trainers.items():
                unmasking = trainer.cfg.mode.sampling == Sampling.unmasking
                plan = canvas(settings, trainer.files.vocab, trainer.cfg.block_size, unmasking)
                model, vocab = trainer.runtime.raw_model, trainer.files.vocab
                times[mode].append(timed(generate, model, vocab, settings, plan, 0, trainer.runtime.autocast))
        for mode, trainer in trainers.items():
            seconds = statistics.median(times[mode])
            steps = settings.steps if trainer.cfg.mode.sampling == Sampling.unmasking else trainer.cfg.block_size
            rows.append((mode, count, trainer.cfg.block_size, steps, seconds, count * trainer.cfg.block_size / seconds))
    return rows


def bound_rows(trainer, repeats: int, draws: tuple[int, ...] = (1, 2, 4)) -> tuple[float, list[tuple]]:
    trainer.objective.bound_draws = 0
    batches = trainer.data.validation_set
    windows = [originals(b.inputs, b.predict_at, b.targets) for b in batches]
    vocab, model = trainer.files.vocab, trainer.runtime.model
    evaluation, bound = [], {n: [] for n in draws}
    for _ in range(repeats):
        evaluation.append(timed(trainer.evaluate))
        for n in draws:
            bound[n].append(timed(nll_bound, model, windows, vocab.mask_id, vocab.base_size, n))
    eval_s = statistics.median(evaluation)
    return eval_s, [(n, statistics.median(bound[n]), statistics.median(bound[n]) / eval_s) for n in draws]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--samples", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    register_schemas()
    with tempfile.TemporaryDirectory() as run_dir:
        trainers = {mode: build(mode, args.device, run_dir) for mode in ("language_model", "unmasking")}
        rows = sampling_rows(trainers, args.samples, args.repeats)
        eval_s, bounds = bound_rows(trainers["unmasking"], args.repeats)
    unmasking = trainers["unmasking"]
    print(f"\nmodel=small block_size={unmasking.cfg.block_size} device={unmasking.device}, median of {args.repeats}")
    print(f"{'mode':<16}{'samples':>8}{'length':>8}{'forwards':>10}{'seconds':>10}{'chars/s':>10}")
    for mode, count, length, forwards, seconds, rate in rows:
        print(f"{mode:<16}{count:>8}{length:>8}{forwards:>10}{seconds:>10.3f}{rate:>10,.0f}")
    windows = sum(b.inputs.size(0) for b in unmasking.data.validation_set)
    print(f"\none evaluation without the bound ({windows} validation windows): {eval_s:.3f} s")
    print(f"{'bound_draws':<14}{'seconds':>10}{'x evaluation':>14}")
    for draws, seconds, ratio in bounds:
        print(f"{draws:<14}{seconds:>10.3f}{ratio:>14.2f}")


if __name__ == "__main__":
    main()
