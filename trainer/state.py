"""Everything about a run's progress that a checkpoint must restore, in one place."""

import math
import random
from dataclasses import asdict, dataclass, field

import numpy as np
import torch


@dataclass
class TrainState:
    step: int = 0  # the next optimizer step to run
    best_val_loss: float = math.inf
    best_step: int | None = None  # the step whose state best.pt holds (None: no evaluation yet)
    tokens_seen: int = 0
    stage: int = 0  # curriculum: the current training stage
    stale_count: int = 0  # evaluations since the stage's best val loss
    stage_best: float = math.inf  # best overall val loss within the current stage
    lr_scale: float = 1.0  # stability: product of the learning-rate backoffs of all rollbacks
    rollbacks: int = 0  # stability: also keys the batches, so a rollback draws fresh ones
    bad_steps: list[int] = field(default_factory=list)  # stability: recent skipped steps
    unfrozen: bool = False  # transfer=two_stage: the trunk has joined the optimizer
    entropy_multiplier_ema: float = 1.0  # loss.entropy_penalty: EMA (0.99) of the loss multiplier
    wandb_run_id: str | None = None  # logger.wandb: the wandb run this training continues

    def state_dict(self) -> dict:
        return asdict(self)

    def load_state_dict(self, data: dict) -> None:
        for key, value in data.items():
            setattr(self, key, value)


def capture_rng() -> dict:
    """RNG states of python, numpy and torch as plain data (loadable with weights_only=True).

    Batches draw from generators derived per step (trainer/batches.py), so these global states
    only drive what the model itself samples: dropout.
    """
    version, words, gauss = random.getstate()
    np_state = np.random.get_state()
    rng = {
        "python": [version, list(words), gauss],
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        rng["cuda"] = torch.cuda.get_rng_state_all()
    return rng


def restore_rng(rng: dict) -> None:
    version, words, gauss = rng["python"]
    random.setstate((version, tuple(words), gauss))
    name, keys, *rest = rng["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), *rest))
    torch.set_rng_state(rng["torch"])
    if "cuda" in rng and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["cuda"])
