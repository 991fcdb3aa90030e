"""Distillation loss of the authors' student training (``train_FKD_label_pruning_batch.py``,
``train()``); the optimiser, LR schedule and EMA are in :mod:`.optim`."""
from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from ..labels.topk import check_topk_pair, scatter_topk_logits, smooth_topk_values, topk_mask, topk_target


def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float,
            variant: str = "kl", label_smoothing: float = 0.0, reduction: str = "batchmean",
            student_temperature: float | None = None) -> torch.Tensor:
    """KL(teacher || student) at temperature T, ``batchmean`` (``reduction="sum"``: summed over
    the rows, which is 0 rather than NaN for an empty batch).

    Computed in fp32 whatever the dtype of the logits (autocast), as the loss at T=20 is a small
    difference of near-uniform distributions.

    ``kl``: ``KLDivLoss(batchmean)(log_softmax(s/T), softmax(t/T))`` (ImageNet-1K / 21K-P).
    ``kl_t2``: the authors' Tiny-ImageNet variant, ``log_target=True`` on ``log_softmax(t/T)`` and
    the loss multiplied by ``T**2`` (same divergence, gradients T^2 larger).
    ``label_smoothing`` is applied as the authors do, to the stored *logits* before the softmax:
    ``(1 - ls) * t + ls / K``. ``student_temperature``: the student's own temperature (LPQLD's
    ``--temp_stu`` / calibrated ``--temp_stu_dynamic``); None: ``T``.
    """
    t = teacher_logits.float()
    if label_smoothing > 0:
        t = (1 - label_smoothing) * t + label_smoothing / t.shape[1]
    t_student = temperature if student_temperature is None else student_temperature
    log_p = F.log_softmax(student_logits.float() / t_student, dim=1)
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


def topk_kd_loss(student_logits: torch.Tensor, values: torch.Tensor, indices: torch.Tensor,
                 temperature: float, variant: str = "kl", label_smoothing: float = 0.0,
                 student_temperature: float | None = None, reduction: str = "batchmean") -> torch.Tensor:
    """:func:`kd_loss` on top-k labels (LPQLD's MR-k, ``train_FKD_LPQLD.py`` 714-790).

    The target is ``softmax(v / T)`` over the k stored logits ``values`` at their class
    ``indices``, zero elsewhere (:func:`lpld.labels.topk.topk_target`); the student's
    ``log_softmax(s / T_s)`` uses ``student_temperature`` when given (calibrated alignment, see
    :mod:`lpld.validate.temperature`), else ``T``. ``label_smoothing`` follows theirs on the k
    stored logits: ``(1 - ls) * v + ls / k``.

    ``kl``: ``KLDivLoss(batchmean)``, their ImageNet path. ``kl_t2`` (Tiny-ImageNet): the same
    divergence times ``T**2`` (the teacher's T, as theirs), i.e. LPLD's log-target loss. Their Tiny
    branch instead scatters ``log_softmax`` targets into zeros and hands them to ``KLDivLoss``
    without ``log_target=True`` (lines 723-729, 783), which is not a divergence; we do not copy it.

    The stored logits are placed in a row of ``-inf`` before one softmax over all classes: the same
    target as theirs up to float rounding, and with k = num_classes bit for bit :func:`kd_loss`.
    ``reduction="sum"``: summed over the rows (0 for an empty batch), as :func:`kd_loss`, for the
    trainer's DDP scaling.
    """

    num_classes = int(student_logits.shape[1])
    # shapes only: index ranges are checked where the store is read (a min/max here would be a
    # device sync every step); an index past the classes still fails in the scatter
    check_topk_pair(values, indices, num_classes, where="top-k distillation loss", check_range=False)
    if values.shape[0] != student_logits.shape[0]:
        raise ValueError(f"{student_logits.shape[0]} student rows but {values.shape[0]} top-k label rows")
    full = scatter_topk_logits(smooth_topk_values(values, label_smoothing), indices, num_classes,
                               check_range=False)
    if reduction not in ("batchmean", "sum"):
        raise ValueError(f"reduction must be 'batchmean' or 'sum'; got {reduction!r}")
    t_student = temperature if student_temperature is None else student_temperature
    log_q = F.log_softmax(student_logits.float() / t_student, dim=1)
    if variant == "kl":
        return F.kl_div(log_q, F.softmax(full / temperature, dim=1), reduction=reduction)
    if variant == "kl_t2":
        inside = topk_mask(indices, num_classes)
        log_p = torch.where(inside, F.log_softmax(full / temperature, dim=1), 0.0)  # no -inf * 0
        pointwise = torch.where(inside, log_p.exp() * (log_p - log_q), 0.0)
        rows = 1 if reduction == "sum" else student_logits.shape[0]
        return pointwise.sum() / rows * temperature ** 2
    raise ValueError(f"unknown loss variant {variant!r}; expected 'kl' or 'kl_t2'")


def probability_target(soft, temperature: float, label_smoothing: float = 0.0) -> torch.Tensor:
    """The [B, C] probability target the loss compares with (what calibration fits the student
    temperature to): ``softmax(t / T)`` of full logits, or the top-k target scattered into zeros."""
    if isinstance(soft, TopkLabels):
        return topk_target(soft.values, soft.indices, soft.num_classes, temperature, label_smoothing)
    t = soft.float()
    if label_smoothing > 0:
        t = (1 - label_smoothing) * t + label_smoothing / t.shape[1]
    return F.softmax(t / temperature, dim=1)


class TopkLabels(NamedTuple):
    """A batch's top-k labels on the device: values [B, k] (float32) and class indices [B, k]."""
    values: torch.Tensor
    indices: torch.Tensor
    num_classes: int

    def tensor_split(self, sections: int) -> list["TopkLabels"]:
        return [TopkLabels(v, i, self.num_classes) for v, i in
                zip(self.values.tensor_split(sections), self.indices.tensor_split(sections))]

    @property
    def shape(self) -> torch.Size:
        return self.values.shape


def distillation_loss(student_logits: torch.Tensor, soft, temperature: float, variant: str,
                      label_smoothing: float = 0.0, student_temperature: float | None = None,
                      reduction: str = "batchmean") -> torch.Tensor:
    """:func:`topk_kd_loss` for :class:`TopkLabels`, :func:`kd_loss` for full logits."""
    if isinstance(soft, TopkLabels):
        return topk_kd_loss(student_logits, soft.values, soft.indices, temperature, variant, label_smoothing,
                            student_temperature=student_temperature, reduction=reduction)
    return kd_loss(student_logits, soft, temperature, variant, label_smoothing, reduction=reduction,
                   student_temperature=student_temperature)
