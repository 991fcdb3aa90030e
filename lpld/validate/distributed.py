"""torch.distributed plumbing for ``torchrun relabel_and_validate/validate.py ...``.

One process per GPU (NCCL) or per CPU worker (gloo); the environment variables torchrun sets
(``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``/``PORT``) decide, read once by
:func:`lpld.utils.runtime.world_info` for every part of lpld that asks which process it is. Without
them the run is a single process and nothing here does anything.
"""
from __future__ import annotations

import dataclasses

import torch
import torch.distributed as dist

from ..utils.runtime import resolve_device, world_info


@dataclasses.dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device_name: str = "auto") -> tuple[DistInfo, torch.device]:
    """Join the process group torchrun describes (if any) and pick this process's device."""
    rank, world, local = world_info()
    if world <= 1:
        return DistInfo(), resolve_device(device_name)
    device = resolve_device(device_name)
    if device.type == "cuda":
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        kwargs = {"device_id": device} if device.type == "cuda" else {}
        try:
            dist.init_process_group(backend=backend, **kwargs)
        except TypeError:  # torch without device_id
            dist.init_process_group(backend=backend)
    return DistInfo(rank, world, local), device


def barrier(info: DistInfo) -> None:
    if info.enabled and dist.is_initialized():
        dist.barrier()


def all_reduce_(tensor: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Sum ``tensor`` over the ranks, in place (nothing to do in a single process)."""
    if info.enabled:
        dist.all_reduce(tensor)
    return tensor


@torch.no_grad()
def broadcast_buffers(module: torch.nn.Module, info: DistInfo) -> None:
    """Give every rank rank 0's buffers (BN running statistics). DDP broadcasts them at the start
    of each forward, so after the last step every rank holds its own last update; evaluated on
    each rank, the model would not be the one rank 0 saves."""
    if info.enabled:
        for buf in module.buffers():
            dist.broadcast(buf, src=0)


def gather_objects(obj, info: DistInfo) -> list:
    """``obj`` of every rank, in rank order (``[obj]`` in a single process)."""
    if not info.enabled:
        return [obj]
    out = [None] * info.world_size
    dist.all_gather_object(out, obj)
    return out


def shard_indices(n: int, info: DistInfo) -> list[int]:
    """Disjoint, exhaustive shard of ``range(n)`` (no padding, so evaluation counts are exact)."""
    return list(range(info.rank, n, info.world_size))
