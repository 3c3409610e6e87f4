"""The `system` config group: device, compute dtype, compilation, threads, and the peak FLOP/s for MFU."""

from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from enum import Enum
from typing import Annotated

import torch
from annotated_types import Ge, Gt

from trainer.errors import ConfigError


class Device(str, Enum):
    auto = "auto"  # cuda when available, else cpu
    cpu = "cpu"
    cuda = "cuda"


class DType(str, Enum):
    auto = "auto"  # bfloat16 (or float16) on cuda, float32 on cpu
    float32 = "float32"
    bfloat16 = "bfloat16"
    float16 = "float16"


@dataclass
class SystemConfig:
    device: Device = Device.auto
    dtype: DType = DType.auto
    compile: bool = False
    fused_adamw: bool = True  # AdamW's fused CUDA kernel (one launch for all parameters); ignored on CPU
    peak_flops: Annotated[float, Gt(0)] = 312e12  # FLOP/s, for MFU; A100 bf16 dense peak
    threads: Annotated[int, Ge(1)] | None = None  # torch intra-op threads on CPU; null: torch's default

    def resolve(self) -> tuple[torch.device, AbstractContextManager, torch.dtype]:
        """(device, autocast context, compute dtype); ConfigError when cuda is asked for and missing."""
        if self.device == Device.cuda and not torch.cuda.is_available():
            raise ConfigError("system.device", "cuda was asked for but no CUDA device is available", "auto, cpu")
        cuda = self.device == Device.cuda or (self.device == Device.auto and torch.cuda.is_available())
        device = torch.device("cuda" if cuda else "cpu")
        if self.threads:
            torch.set_num_threads(self.threads)
        dtype_name = self.dtype.value
        if self.dtype == DType.auto:
            dtype_name = "float32" if not cuda else ("bfloat16" if torch.cuda.is_bf16_supported() else "float16")
        dtype = getattr(torch, dtype_name)
        if cuda:
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
        autocast = nullcontext() if dtype == torch.float32 else torch.autocast(device.type, dtype=dtype)
        return device, autocast, dtype
