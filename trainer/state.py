"""The run's progress, and the random states a checkpoint restores."""

import math
import random
from dataclasses import asdict, dataclass

import numpy as np
import torch


@dataclass
class TrainState:
    """The run's progress. The other parts keep their own state (the curriculum's stage, the guard's
    counters, the optimization's frozen set, ...); a checkpoint composes them (trainer/loop.py)."""

    step: int = 0  # the next optimizer step to run
    best_val_loss: float = math.inf
    best_step: int | None = None  # the step whose state best.pt holds (None: no evaluation yet)
    tokens_seen: int = 0

    def state_dict(self) -> dict:
        return asdict(self)

    def load_state_dict(self, data: dict) -> None:
        for key in self.state_dict():
            if key in data:
                setattr(self, key, data[key])


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
