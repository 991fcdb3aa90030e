"""Device selection, seeding and the CUDA speed settings (AMP, channels_last) used by the stages."""
from __future__ import annotations

import contextlib
import random

import numpy as np
import torch

from .errors import DeviceUnavailableError


def resolve_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise DeviceUnavailableError(f"--device {name}: CUDA is not available on this machine; use --device cpu")
    return device


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def autocast(device: torch.device, enabled: bool, dtype: torch.dtype = torch.bfloat16):
    """Mixed precision on CUDA only; a no-op context elsewhere."""
    if enabled and device.type == "cuda":
        return torch.autocast("cuda", dtype=dtype)
    return contextlib.nullcontext()


def to_channels_last(module_or_tensor, device: torch.device):
    """channels_last speeds up convolutions with cuDNN; on CPU it is left alone."""
    if device.type == "cuda":
        return module_or_tensor.to(memory_format=torch.channels_last)
    return module_or_tensor
