"""Distillation loss of the authors' student training (``train_FKD_label_pruning_batch.py``,
``train()``); the optimiser, LR schedule and EMA are in :mod:`.optim`."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float,
            variant: str = "kl", label_smoothing: float = 0.0, reduction: str = "batchmean") -> torch.Tensor:
    """KL(teacher || student) at temperature T, ``batchmean`` (``reduction="sum"``: summed over
    the rows, which is 0 rather than NaN for an empty batch).

    Computed in fp32 whatever the dtype of the logits (autocast), as the loss at T=20 is a small
    difference of near-uniform distributions.

    ``kl``: ``KLDivLoss(batchmean)(log_softmax(s/T), softmax(t/T))`` (ImageNet-1K / 21K-P).
    ``kl_t2``: the authors' Tiny-ImageNet variant, ``log_target=True`` on ``log_softmax(t/T)`` and
    the loss multiplied by ``T**2`` (same divergence, gradients T^2 larger).
    ``label_smoothing`` is applied as the authors do, to the stored *logits* before the softmax:
    ``(1 - ls) * t + ls / K``.
    """
    t = teacher_logits.float()
    if label_smoothing > 0:
        t = (1 - label_smoothing) * t + label_smoothing / t.shape[1]
    log_p = F.log_softmax(student_logits.float() / temperature, dim=1)
    if reduction not in ("batchmean", "sum"):
        raise ValueError(f"reduction must be 'batchmean' or 'sum'; got {reduction!r}")
    if variant == "kl":
        return F.kl_div(log_p, F.softmax(t / temperature, dim=1), reduction=reduction)
    if variant == "kl_t2":
        loss = F.kl_div(log_p, F.log_softmax(t / temperature, dim=1), reduction=reduction, log_target=True)
        return loss * temperature ** 2
    raise ValueError(f"unknown loss variant {variant!r}; expected 'kl' or 'kl_t2'")


def resolve_loss_variant(loss: str, dataset: str) -> str:
    if loss != "auto":
        return loss
    return "kl_t2" if dataset in ("tiny", "demo") else "kl"
