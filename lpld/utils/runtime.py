"""Device selection, seeding, RNG checkpoints, the speed settings (AMP, channels_last), and which
process of a distributed run this is (:func:`world_info`, :func:`is_main_process`).

Every speed setting is device-agnostic: the same code path runs on a GPU and, when asked, on the
CPU (CPU autocast in bfloat16, channels_last convolutions through oneDNN), so CI exercises it.
``None`` ("auto") turns a setting on for CUDA only.
"""
from __future__ import annotations

import contextlib
import os
import random

import numpy as np
import torch
from torch import nn

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


def on_for_cuda(setting: bool | None, device: torch.device) -> bool:
    """Resolve a tri-state speed option: ``None`` means on for CUDA, off elsewhere."""
    return device.type == "cuda" if setting is None else bool(setting)


def autocast(device: torch.device, enabled: bool, dtype: torch.dtype | None = None):
    """Mixed precision on any device type autocast supports (bfloat16 unless ``dtype`` says
    otherwise); a no-op context when not ``enabled``."""
    if not enabled:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype or torch.bfloat16)


def to_channels_last(module_or_tensor, enabled: bool):
    """channels_last (NHWC) memory format when ``enabled``: faster convolutions with cuDNN, and
    the oneDNN path on the CPU. 4-d tensors and modules only; anything else is returned as is."""
    if not enabled:
        return module_or_tensor
    if isinstance(module_or_tensor, torch.Tensor):
        return module_or_tensor.contiguous(memory_format=torch.channels_last) \
            if module_or_tensor.dim() == 4 else module_or_tensor
    return module_or_tensor.to(memory_format=torch.channels_last)


class Float32Linear(nn.Linear):
    """A Linear layer that computes in fp32 even under autocast (same parameters and state-dict
    keys as ``nn.Linear``)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(x.device.type, enabled=False):
            return nn.functional.linear(x.float(), self.weight.float(),
                                        None if self.bias is None else self.bias.float())


def keep_logits_fp32(model: nn.Module) -> nn.Module:
    """Make the classifier (the model's last ``nn.Linear``) run in fp32 under autocast, so the
    logits are not rounded to bf16's 8-bit mantissa before the loss and the top-k. In place."""
    linears = [m for m in model.modules() if type(m) is nn.Linear]
    if linears:
        linears[-1].__class__ = Float32Linear
    return model


def set_cudnn_benchmark(device: torch.device) -> None:
    """Let cuDNN pick the fastest kernels: worth it where every step has the same shapes."""
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True


def rng_state() -> dict:
    """Every random stream a training step may draw from (dropout, stochastic depth, Python and
    numpy draws), so a resumed run continues the very same streams."""
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state()  # this process's device only
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


# ---- processes ---------------------------------------------------------------------------------
def world_info() -> tuple[int, int, int]:
    """(rank, world size, local rank) of this process: torch.distributed's once its process group
    is joined, before that the variables torchrun (or :func:`lpld.launch.launcher.export_distributed`)
    sets, ``RANK`` / ``WORLD_SIZE`` / ``LOCAL_RANK``; (0, 1, 0) for a single process."""
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size(), local
    return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1")), local


def is_main_process() -> bool:
    """Rank 0 (or a single process): the one that writes shared files and prints."""
    return world_info()[0] == 0
