"""Optimiser, learning-rate schedule and weight EMA of the authors' student training.

All from ``train_FKD_label_pruning_batch.py`` (``main()`` and ``train()``) and ``utils.py``, built
from what torch and timm provide; ``tests/test_validate.py`` pins each to the authors' values.
"""
from __future__ import annotations

import torch
from timm.optim import param_groups_weight_decay
from timm.utils import ModelEmaV3
from torch import nn
from torch.optim import lr_scheduler

from ..utils.schedule import warmup_cosine, warn_long_warmup


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Weight decay on conv/linear weights only: timm's rule (no decay on 1-d tensors, biases and
    the model's ``no_weight_decay()`` names). The authors' ``get_parameters`` decays parameters
    whose name holds "weight" and that have more than one dimension: the same split for every
    torchvision student and for timm models that declare their embeddings in ``no_weight_decay``."""
    skip = model.no_weight_decay() if hasattr(model, "no_weight_decay") else ()
    return param_groups_weight_decay(model, weight_decay, no_weight_decay_list=skip)


def build_optimizer(model: nn.Module, cfg, device: torch.device | None = None) -> torch.optim.Optimizer:
    """SGD (``--sgd``) or AdamW, as the authors; AdamW runs as one fused kernel on CUDA."""
    if cfg.sgd:
        return torch.optim.SGD(param_groups(model, cfg.weight_decay), lr=cfg.learning_rate,
                               momentum=cfg.momentum)
    fused = device is not None and device.type == "cuda"
    return torch.optim.AdamW(param_groups(model, cfg.adamw_weight_decay), lr=cfg.adamw_lr, fused=fused)


def build_scheduler(optimizer: torch.optim.Optimizer, cfg, dataset: str) -> lr_scheduler.LRScheduler:
    """The authors' LR schedule, stepped once per epoch.

    * ``--cos --sgd`` on Tiny-ImageNet: their own ``SequentialLR(LinearLR(0.01, 5 epochs),
      CosineAnnealingLR(T_max = epochs - 5))`` (a plan with hard epochs: over ``train_epochs``, the
      epochs of both kinds, as HALD's one schedule). A run of 5 epochs or fewer trains only in the
      warm-up: kept, with a warning line.
    * ``--cos``: their ``LambdaLR(0.5 * (1 + cos(pi * e / train_epochs)))`` is
      ``CosineAnnealingLR(T_max = train_epochs)`` (``--smoothing_lr``: T_max stretched by
      ``smoothing_lr_strength``).
    * otherwise SRe2L's ``LambdaLR(1 - e / train_epochs)``: ``LinearLR(1, 0, train_epochs)``.
    """
    total = cfg.train_epochs
    if cfg.cos and cfg.sgd and dataset == "tiny":
        horizon = cfg.epochs if getattr(cfg, "label_plan", "soft") == "soft" else total
        warn_long_warmup(5, total, "raise --train-epochs (or --epochs, which it follows when unset) above 5, "
                                   "or leave out --cos")
        return warmup_cosine(optimizer, horizon, warmup_epochs=5, warmup_start_factor=0.01)
    if cfg.cos:
        stretch = cfg.smoothing_lr_strength if cfg.smoothing_lr else 1.0
        return lr_scheduler.CosineAnnealingLR(optimizer, T_max=total * stretch, eta_min=0.0)
    return lr_scheduler.LinearLR(optimizer, start_factor=1.0, end_factor=0.0, total_iters=total)


class ModelEma(ModelEmaV3):
    """timm's ``ModelEmaV3`` driven with ``ema_pytorch.EMA``'s schedule (the authors' ``EMA(model,
    beta=ema_decay)`` with the library defaults): :meth:`step` once per forward/backward pass;
    every 10th call updates; calls up to 100 copy the weights; afterwards the decay is
    ``min(beta, 1 - (1 + n)^(-2/3))`` with ``n`` the calls after warm-up. Float buffers (BN running
    statistics) are averaged like parameters, as both libraries do."""

    def __init__(self, model: nn.Module, beta: float = 0.99, update_every: int = 10,
                 update_after_step: int = 100) -> None:
        super().__init__(model, decay=beta, update_after_step=update_after_step, use_warmup=True,
                         warmup_gamma=1.0, warmup_power=2 / 3)
        self.module.requires_grad_(False)
        self.update_every = update_every
        self.calls = 0

    @torch.no_grad()
    def step(self, model: nn.Module) -> None:
        call = self.calls
        self.calls += 1
        if call % self.update_every == 0:
            self.update(model, step=self.calls)  # ema_pytorch counts the call it is in

    def checkpoint(self) -> dict:
        return {"model": self.module.state_dict(), "step": self.calls}

    def restore(self, state: dict) -> None:
        self.module.load_state_dict(state["model"])
        self.calls = int(state["step"])
