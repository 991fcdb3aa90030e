"""The warm-up + cosine learning-rate schedule of the authors' scripts, from torch's schedulers.

One function for every stage: the teacher (squeeze, per epoch), the Tiny-ImageNet SGD student
(validate, per epoch) and image recovery (per iteration, no warm-up: the authors'
``lr_cosine_policy(lr, 0, iterations)``), and the warning a warm-up as long as the run deserves."""
from __future__ import annotations

import torch
from torch.optim import lr_scheduler

from .log import get_logger

log = get_logger(__name__)


def warmup_cosine(optimizer: torch.optim.Optimizer, total_epochs: int, warmup_epochs: int = 0,
                  warmup_start_factor: float = 0.01) -> lr_scheduler.LRScheduler:
    """torchvision reference's ``SequentialLR(LinearLR(start_factor, total_iters=warmup),
    CosineAnnealingLR(T_max=epochs - warmup))``, stepped once per epoch (the authors' teacher
    recipe: ``--lr-warmup-epochs 5 --lr-warmup-method linear --lr-warmup-decay 0.01
    --lr-scheduler cosineannealinglr``). Stepped once per iteration without warm-up it is the
    recover stage's ``lr_cosine_policy`` (``0.5 * (1 + cos(pi * it / iterations)) * lr``)."""
    cosine = lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, total_epochs - warmup_epochs), eta_min=0.0)
    if not warmup_epochs:
        return cosine
    warmup = lr_scheduler.LinearLR(optimizer, start_factor=warmup_start_factor, total_iters=warmup_epochs)
    return lr_scheduler.SequentialLR(optimizer, [warmup, cosine], milestones=[warmup_epochs])


def warn_long_warmup(warmup_epochs: int, run_epochs: int, fix: str) -> bool:
    """A warm-up of at least the run's epochs leaves the whole run in the warm-up, below the full
    learning rate (the cosine never starts). The schedule stays as asked; this says so in one
    warning line naming both numbers and ``fix`` (what to change). Returns whether it warned."""
    if not warmup_epochs or warmup_epochs < run_epochs:
        return False
    log.warning(f"warm-up of {warmup_epochs} epochs >= the run's {run_epochs} epochs: the whole run trains at "
                f"the warm-up learning rate; {fix}")
    return True
