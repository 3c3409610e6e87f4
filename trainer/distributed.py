"""Several processes (`torchrun --nproc_per_node=N -m trainer ...`): the process group and the few
collectives the trainer needs, behind one object whose single-process form does nothing.

torchrun sets RANK, LOCAL_RANK and WORLD_SIZE (and the rendezvous address) for every process it
starts. The group uses gloo for CPU tensors and, where CUDA exists, NCCL for CUDA tensors (one
process per GPU, `cuda:LOCAL_RANK`), so small host-side agreements (the stop flag, the step's
target count) never wait for the device.
"""

import os
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel


def world_size_from_env() -> int:
    """The number of processes torchrun started (1 without torchrun); readable before any rendezvous."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def rank_from_env() -> int:
    return int(os.environ.get("RANK", "0"))


@dataclass(frozen=True)
class Distributed:
    """This process's place among `world_size` processes; every method is a no-op for one process."""

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0 decides the run folder, writes every file and prints."""
        return self.rank == 0

    @classmethod
    def start(cls) -> "Distributed":
        """Join the process group torchrun describes in the environment (nothing without torchrun)."""
        world_size = world_size_from_env()
        if world_size == 1:
            return cls()
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        backend = "gloo"
        if torch.cuda.is_available():
            torch.cuda.set_device(local_rank)  # "cuda" below means this process's GPU
            backend = "cpu:gloo,cuda:nccl"
        dist.init_process_group(backend=backend)
        return cls(rank=dist.get_rank(), local_rank=local_rank, world_size=dist.get_world_size())

    def stop(self) -> None:
        """Leave the process group (at the end of the command)."""
        if self.enabled and dist.is_initialized():
            dist.destroy_process_group()

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def share(self, value):
        """Rank 0's `value` (any picklable object), on every rank."""
        if not self.enabled:
            return value
        box = [value]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def wrap(self, model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
        """The model as the training step calls it: DDP averages the gradients of all ranks in backward.

        Buffers are not synchronised in forward (they are fixed tables, such as RoPE's), so a forward pass needs no
        collective and ranks may evaluate different numbers of batches.
        """
        if not self.enabled:
            return model
        device_ids = [device.index if device.index is not None else self.local_rank] if device.type == "cuda" else None
        return DistributedDataParallel(model, device_ids=device_ids, forward_sync_buffers=False)

    def gradient_sync(self, model: torch.nn.Module, sync: bool) -> AbstractContextManager:
        """Around a micro-step's forward and backward: DDP's all-reduce only when `sync` (the last one)."""
        if sync or not self.enabled:
            return nullcontext()
        return model.no_sync()

    def sum_counts(self, count: int) -> int:
        """The sum over ranks of a host-side integer (a CPU all-reduce: no device sync)."""
        if not self.enabled:
            return count
        total = torch.tensor([count], dtype=torch.int64)
        dist.all_reduce(total)
        return int(total.item())

    def first_signal(self, signal_number: int | None) -> int | None:
        """A stop signal any rank received (the highest number if several), or None: every rank agrees."""
        if not self.enabled:
            return signal_number
        flag = torch.tensor([signal_number or 0], dtype=torch.int64)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        return int(flag.item()) or None

    def sum_(self, tensor: torch.Tensor) -> torch.Tensor:
        """All-reduce (sum) in place, on the tensor's device; no host sync on CUDA."""
        if self.enabled:
            dist.all_reduce(tensor)
        return tensor

    def any_(self, flags: torch.Tensor) -> torch.Tensor:
        """Boolean flags (a device tensor): True where any rank's flag is True."""
        if not self.enabled:
            return flags
        raised = flags.to(torch.int32)
        dist.all_reduce(raised, op=dist.ReduceOp.MAX)
        return raised.bool()

    def shard(self, items: list) -> list:
        """This rank's contiguous share of `items` (rank order = item order; a share may be empty)."""
        n = len(items)
        return items[n * self.rank // self.world_size : n * (self.rank + 1) // self.world_size]

    def gather_rows(self, parts: dict[str, torch.Tensor] | None, device: torch.device) -> dict[str, torch.Tensor]:
        """Every rank's per-item tensors (first dimension: items; None: this rank had no items),
        concatenated in rank order on `device`: the tensors one process would have computed alone."""
        if not self.enabled:
            return parts
        everyone = [None] * self.world_size
        dist.all_gather_object(everyone, None if parts is None else {k: v.cpu() for k, v in parts.items()})
        present = [part for part in everyone if part is not None]
        return {key: torch.cat([part[key] for part in present]).to(device) for key in present[0]}


ONE_PROCESS = Distributed()  # a command without torchrun
