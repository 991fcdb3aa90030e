"""Learning-rate schedules used by the authors' scripts."""
from __future__ import annotations

import math

import torch
from torch.optim import lr_scheduler


def warmup_cosine(optimizer: torch.optim.Optimizer, total_epochs: int, warmup_epochs: int = 0,
                  warmup_start_factor: float = 0.01) -> lr_scheduler.LRScheduler:
    """torchvision reference's ``SequentialLR(LinearLR(start_factor, total_iters=warmup),
    CosineAnnealingLR(T_max=epochs - warmup))``, stepped once per epoch (the authors' teacher
    recipe: ``--lr-warmup-epochs 5 --lr-warmup-method linear --lr-warmup-decay 0.01
    --lr-scheduler cosineannealinglr``)."""
    cosine = lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, total_epochs - warmup_epochs), eta_min=0.0)
    if not warmup_epochs:
        return cosine
    warmup = lr_scheduler.LinearLR(optimizer, start_factor=warmup_start_factor, total_iters=warmup_epochs)
    return lr_scheduler.SequentialLR(optimizer, [warmup, cosine], milestones=[warmup_epochs])


def warmup_cosine_factor(epoch: float, total_epochs: int, warmup_epochs: int = 0,
                         warmup_start_factor: float = 0.01, min_factor: float = 0.0) -> float:
    """Multiplier of the base LR at (possibly fractional) ``epoch``: linear warm-up from
    ``warmup_start_factor`` to 1 over ``warmup_epochs``, then cosine decay to ``min_factor``.
    The closed form of :func:`warmup_cosine`; the recover stage sets its per-iteration LR with it
    (the authors' ``lr_cosine_policy``)."""
    if warmup_epochs and epoch < warmup_epochs:
        return warmup_start_factor + (1 - warmup_start_factor) * epoch / warmup_epochs
    span = max(1, total_epochs - warmup_epochs)
    progress = min(1.0, (epoch - warmup_epochs) / span)
    return min_factor + (1 - min_factor) * 0.5 * (1 + math.cos(math.pi * progress))
