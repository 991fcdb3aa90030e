"""Learning-rate schedules used by the authors' scripts."""
from __future__ import annotations

import math


def warmup_cosine_factor(epoch: float, total_epochs: int, warmup_epochs: int = 0,
                         warmup_start_factor: float = 0.01, min_factor: float = 0.0) -> float:
    """Multiplier of the base LR at (possibly fractional) ``epoch``.

    Linear warm-up from ``warmup_start_factor`` to 1 over ``warmup_epochs``, then cosine decay to
    ``min_factor`` over the remaining epochs. With per-epoch stepping this is exactly torchvision
    reference's ``SequentialLR(LinearLR(start_factor, total_iters=warmup), CosineAnnealingLR)``
    (the authors' teacher recipe: ``--lr-warmup-epochs 5 --lr-warmup-method linear
    --lr-warmup-decay 0.01 --lr-scheduler cosineannealinglr``).
    """
    if warmup_epochs and epoch < warmup_epochs:
        return warmup_start_factor + (1 - warmup_start_factor) * epoch / warmup_epochs
    span = max(1, total_epochs - warmup_epochs)
    progress = min(1.0, (epoch - warmup_epochs) / span)
    return min_factor + (1 - min_factor) * 0.5 * (1 + math.cos(math.pi * progress))
