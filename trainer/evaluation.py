"""Evaluation during training: the train loss on fresh training batches and every metric of the
objective on the fixed validation set, each rank computing its share (SPEC 6)."""

import torch

from trainer.batches import Stream, generator_for
from trainer.ema import WeightAverage
from trainer.objectives import Batch, Objective
from trainer.runtime import Runtime
from trainer.step import Data


def evaluate(
    runtime: Runtime, objective: Objective, data: Data, run, step: int, stage: int, ema: WeightAverage | None = None
) -> dict[str, float]:
    """The metrics of `measure`; with a weight average, those of the averaged weights, and the
    validation loss of the trained ones as `val/loss_raw`."""
    metrics = measure(runtime, objective, data, run, step, stage)
    if ema is None:
        return metrics
    with ema.applied():
        averaged = measure(runtime, objective, data, run, step, stage)
    return {**averaged, "val/loss_raw": metrics["val/loss"]}


@torch.no_grad()
def measure(runtime: Runtime, objective: Objective, data: Data, run, step: int, stage: int) -> dict[str, float]:
    """`train/loss` on `run.eval_iters` fresh training batches of `step`, and `val/<metric>` for every
    metric of the objective on the validation set; host floats (a host sync)."""
    runtime.model.eval()
    with runtime.autocast:
        train_loss = estimate_train_loss(runtime, objective, data, run, step, stage)
        # each rank evaluates its share of the validation batches; the values of all are joined
        val = objective.evaluate(runtime.model, runtime.dist.shard(data.validation_set), runtime.gather)
    val = data.in_text_units(val)
    runtime.model.train()
    return {"train/loss": train_loss, **{f"val/{k}": v for k, v in val.items()}}


def estimate_train_loss(runtime: Runtime, objective: Objective, data: Data, run, step: int, stage: int) -> float:
    """The mean loss of `eval_iters` fresh training batches (their own generators, keyed by `step`)."""
    dist = runtime.dist
    batches = (
        eval_train_batch(runtime, objective, data, run, step, stage, k) for k in dist.shard(range(run.eval_iters))
    )
    losses = [objective.loss(runtime.model, batch).float() for batch in batches]
    total = torch.stack(losses).sum() if losses else torch.zeros((), device=runtime.device)
    return dist.sum_(total).item() / run.eval_iters


def eval_train_batch(runtime: Runtime, objective: Objective, data: Data, run, step: int, stage: int, k: int) -> Batch:
    generator = generator_for(run.seed, Stream.EVAL_TRAIN, step, k)
    batch = objective.make_batch(data.train_windows, run.batch_size, generator, stage, step)
    return objective.on_device(batch.to(runtime.device))
