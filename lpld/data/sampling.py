"""Epoch order and per-image random augmentation that depend only on (seed, epoch, image).

torchvision's reference draws the augmentation from each DataLoader worker's global RNG, seeded
once when the worker starts. With persistent workers that seed is drawn once per run, so a run
resumed at epoch k augments differently from one that got there without stopping, and with any
workers the draws depend on which worker an image lands on. Here the sampler hands every
dataset item its own seed; the item's transform runs on a generator seeded from it. The
distributions are torchvision's; the images of an epoch are the same for any worker count and
after a resume.

Used by the teacher's training and class-statistics pass (:mod:`lpld.squeeze`) and by the
students' hard-label epochs (:mod:`lpld.validate.hard`).
"""
from __future__ import annotations

from typing import Iterator

import torch
from torch.utils.data import Dataset, Sampler

_MIX = 0x9E3779B97F4A7C15  # odd 64-bit constant: spreads (seed, epoch, index) over the seed space


def item_seed(seed: int, epoch: int, index: int) -> int:
    return ((seed * _MIX + epoch) * _MIX + index) % (1 << 63)


class SeededEpochSampler(Sampler):
    """Yields ``(index, item_seed)`` pairs: a permutation of the dataset drawn from
    ``(seed, epoch)`` when ``shuffle``, the dataset order otherwise."""

    def __init__(self, size: int, seed: int, shuffle: bool = True) -> None:
        self.size, self.seed, self.shuffle = size, seed, shuffle
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[tuple[int, int]]:
        if self.shuffle:
            order = torch.randperm(self.size, generator=torch.Generator().manual_seed(item_seed(self.seed, self.epoch, -1)))
            order = order.tolist()
        else:
            order = range(self.size)
        for i in order:
            yield int(i), item_seed(self.seed, self.epoch, int(i))

    def __len__(self) -> int:
        return self.size


class SeededItems(Dataset):
    """``dataset[index]`` with torch's global RNG seeded by the item's seed for the duration of
    the call (and restored after it, so the caller's random stream is untouched)."""

    def __init__(self, dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int]):
        index, seed = key
        with torch.random.fork_rng(devices=[]):
            # the CPU generator only, which the transforms draw from: torch.manual_seed would also
            # queue a CUDA seeding (with a stack trace, milliseconds per item) where CUDA is not
            # initialised, e.g. in every DataLoader worker
            torch.default_generator.manual_seed(seed)
            return self.dataset[index]
