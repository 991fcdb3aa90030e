"""Distillation loss, optimiser, LR schedule and EMA of the authors' student training.

All from ``train_FKD_label_pruning_batch.py`` (``main()`` and ``train()``) and ``utils.py``.
"""
from __future__ import annotations

import copy
import math

import torch
import torch.nn.functional as F
from torch import nn


def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float,
            variant: str = "kl", label_smoothing: float = 0.0) -> torch.Tensor:
    """KL(teacher || student) at temperature T, ``batchmean``.

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
    if variant == "kl":
        return F.kl_div(log_p, F.softmax(t / temperature, dim=1), reduction="batchmean")
    if variant == "kl_t2":
        loss = F.kl_div(log_p, F.log_softmax(t / temperature, dim=1), reduction="batchmean", log_target=True)
        return loss * temperature ** 2
    raise ValueError(f"unknown loss variant {variant!r}; expected 'kl' or 'kl_t2'")


def resolve_loss_variant(loss: str, dataset: str) -> str:
    if loss != "auto":
        return loss
    return "kl_t2" if dataset in ("tiny", "demo") else "kl"


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Weight decay on multi-dimensional ``weight`` tensors only (authors' ``get_parameters``)."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        (decay if "weight" in name and p.ndim > 1 else no_decay).append(p)
    return [dict(params=decay, weight_decay=weight_decay), dict(params=no_decay, weight_decay=0.0)]


def build_optimizer(model: nn.Module, cfg) -> torch.optim.Optimizer:
    if cfg.sgd:
        return torch.optim.SGD(param_groups(model, cfg.weight_decay), lr=cfg.learning_rate,
                               momentum=cfg.momentum)
    return torch.optim.AdamW(param_groups(model, cfg.adamw_weight_decay), lr=cfg.adamw_lr)


def lr_factor(epoch: int, cfg, dataset: str) -> float:
    """Multiplier of the base LR during (0-based) ``epoch``; the scheduler steps once per epoch.

    * ``cos`` + ``sgd`` on Tiny-ImageNet: SequentialLR(LinearLR(0.01, 5 epochs),
      CosineAnnealingLR(T_max = epochs - 5, eta_min 0)).
    * ``cos``: LambdaLR ``0.5 * (1 + cos(pi * e / train_epochs))`` (``smoothing_lr``: the argument
      divided by ``smoothing_lr_strength``).
    * otherwise SRe2L's linear decay ``1 - e / train_epochs``.
    Past ``train_epochs`` the LambdaLR variants give 0, as theirs do.
    """
    total = cfg.train_epochs
    if cfg.cos and cfg.sgd and dataset == "tiny":
        warmup, start = 5, 0.01
        if epoch < warmup:
            return start + (1 - start) * epoch / warmup
        t_max = max(1, cfg.epochs - warmup)
        return 0.5 * (1 + math.cos(math.pi * (epoch - warmup) / t_max))
    if epoch > total:
        return 0.0
    if cfg.cos:
        stretch = cfg.smoothing_lr_strength if cfg.smoothing_lr else 1.0
        return 0.5 * (1 + math.cos(math.pi * epoch / total / stretch))
    return 1.0 - epoch / total


def set_lr(optimizer: torch.optim.Optimizer, base_lr: float, factor: float) -> float:
    for group in optimizer.param_groups:
        group["lr"] = base_lr * factor
    return base_lr * factor


class ModelEMA:
    """EMA of the weights with ``ema_pytorch.EMA``'s schedule (the authors' ``EMA(model,
    beta=ema_decay)`` with the library defaults): ``update()`` once per forward/backward pass;
    every 10th call updates; the first 100 calls copy the weights; afterwards decay
    ``min(beta, 1 - (1 + n)^(-2/3))`` with ``n`` the calls after warm-up. Float buffers (BN running
    statistics) are averaged like parameters."""

    def __init__(self, model: nn.Module, beta: float = 0.99, update_every: int = 10,
                 update_after_step: int = 100, power: float = 2 / 3) -> None:
        self.online = model
        self.model = copy.deepcopy(model).eval().requires_grad_(False)
        self.beta, self.update_every, self.update_after_step, self.power = beta, update_every, update_after_step, power
        self.step = 0

    def _pairs(self):
        own = dict(self.online.named_parameters()) | dict(self.online.named_buffers())
        for name, value in list(self.model.named_parameters()) + list(self.model.named_buffers()):
            if value.dtype.is_floating_point:
                yield value, own[name]

    def decay(self) -> float:
        n = max(self.step - self.update_after_step - 1, 0)
        return 0.0 if n <= 0 else min(self.beta, 1 - (1 + n) ** -self.power)

    @torch.no_grad()
    def update(self) -> None:
        step = self.step
        self.step += 1
        if step % self.update_every:
            return
        decay = 0.0 if step <= self.update_after_step else self.decay()
        for ema_v, v in self._pairs():
            ema_v.lerp_(v.detach(), 1.0 - decay)

    def state_dict(self) -> dict:
        return {"model": self.model.state_dict(), "step": self.step}

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.step = int(state["step"])


def topk_kd_loss(student_logits: torch.Tensor, values: torch.Tensor, indices: torch.Tensor,
                 temperature: float, variant: str = "kl", label_smoothing: float = 0.0,
                 student_temperature: float | None = None) -> torch.Tensor:
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
    """
    from ..labels.topk import check_topk_pair, scatter_topk_logits, smooth_topk_values, topk_mask

    num_classes = int(student_logits.shape[1])
    # shapes only: index ranges are checked where the store is read (a min/max here would be a
    # device sync every step); an index past the classes still fails in the scatter
    check_topk_pair(values, indices, num_classes, where="top-k distillation loss", check_range=False)
    if values.shape[0] != student_logits.shape[0]:
        raise ValueError(f"{student_logits.shape[0]} student rows but {values.shape[0]} top-k label rows")
    full = scatter_topk_logits(smooth_topk_values(values, label_smoothing), indices, num_classes,
                               check_range=False)
    t_student = temperature if student_temperature is None else student_temperature
    log_q = F.log_softmax(student_logits.float() / t_student, dim=1)
    if variant == "kl":
        return F.kl_div(log_q, F.softmax(full / temperature, dim=1), reduction="batchmean")
    if variant == "kl_t2":
        inside = topk_mask(indices, num_classes)
        log_p = torch.where(inside, F.log_softmax(full / temperature, dim=1), 0.0)  # no -inf * 0
        pointwise = torch.where(inside, log_p.exp() * (log_p - log_q), 0.0)
        return pointwise.sum() / student_logits.shape[0] * temperature ** 2
    raise ValueError(f"unknown loss variant {variant!r}; expected 'kl' or 'kl_t2'")
