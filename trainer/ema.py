"""An exponential moving average of the weights (optim.ema_decay), as every masked-diffusion table
reports its models (MDLM, SEDD, MD4: decay 0.9999).

After each optimizer step, from the `start`-th on, ema <- decay * ema + (1 - decay) * weights, on
the device in one fused call (no host sync); before it, the average follows the weights. It is part
of the optimization's state, so checkpoints keep it and a rollback restores the good state's. Every
DDP rank holds the same weights, hence the same average.
"""

from contextlib import contextmanager

import torch


class WeightAverage:
    def __init__(self, model: torch.nn.Module, decay: float, start: int):
        self.model, self.decay, self.start = model, decay, start
        self.names = [name for name, _ in model.named_parameters()]
        self.weights = [p.detach().clone() for p in model.parameters()]
        self.updates = 0  # optimizer steps taken (host counter)

    @torch.no_grad()
    def update(self) -> None:
        """After an optimizer step: follow the weights until `start` steps are taken, then average."""
        params = [p.detach() for p in self.model.parameters()]
        self.updates += 1
        if self.updates <= self.start:
            torch._foreach_copy_(self.weights, params)
        else:
            torch._foreach_lerp_(self.weights, params, 1 - self.decay)

    @contextmanager
    @torch.no_grad()
    def applied(self):
        """The model holds the averaged weights inside the block, its own again after it."""
        own = [p.detach().clone() for p in self.model.parameters()]
        torch._foreach_copy_([p.detach() for p in self.model.parameters()], self.weights)
        try:
            yield
        finally:
            torch._foreach_copy_([p.detach() for p in self.model.parameters()], own)

    def state_dict(self) -> dict:
        """{"updates", "weights": {parameter name: tensor}}: the averaged weights under every name the
        model's state dict gives them (a tied output head shares the embedding's), so they replace
        all of its parameters when loaded over it."""
        averaged = {id(p): w for p, w in zip(self.model.parameters(), self.weights)}
        names = self.model.named_parameters(remove_duplicate=False)
        return {"updates": self.updates, "weights": {n: averaged[id(p)].clone() for n, p in names}}

    def load_state_dict(self, state: dict | None) -> None:
        """The saved average; None (a checkpoint written without one) starts it from the weights."""
        if state is None:
            self.weights = [p.detach().clone() for p in self.model.parameters()]
            self.updates = 0
            return
        self.updates = state["updates"]
        for weight, name in zip(self.weights, self.names):
            weight.copy_(state["weights"][name])


def averaged_state_dict(payload: dict) -> dict:
    """A checkpoint's model state dict with the averaged weights in place of the trained ones (the
    buffers, which are not averaged, are the model's); the model's own without an average."""
    ema = payload.get("ema")
    return {**payload["model"], **ema["weights"]} if ema else payload["model"]
