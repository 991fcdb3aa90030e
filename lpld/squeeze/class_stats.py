"""Class-statistics pass: one epoch over the real training images with the model in eval mode and
labels passed, so every ClassAwareBatchNorm2d records per-class running mean/var.

As the authors (``recover/tiny_forward/forward_once.py``): training augmentation (RandomResizedCrop +
flip), eval mode (ordinary BN statistics and weights untouched), then validation. The checkpoint
``{"model": state_dict}`` carries ``class_running_mean`` / ``class_running_var`` in every BN and is
loadable by the authors' recovery code, and theirs (``resnet18_tiny_0.pth``, ``resnet18_0.pth``) by ours.
"""
from __future__ import annotations

import argparse
import os
import time

import torch

from ..data import build_dataset, train_transform, val_transform
from ..data.sampling import SeededEpochSampler
from ..engine import evaluate
from ..models import build_model, class_labels, finalize_exact_class_stats, save_checkpoint, set_class_stats_mode
from ..models.class_bn import check_labels
from ..utils.errors import InputValueError
from ..utils.log import get_logger
from ..utils.progress import progress_bar
from ..utils.runtime import autocast, on_for_cuda, resolve_device, seed_everything, to_channels_last
from . import preflight
from .train import build_loader, require_data_path

log = get_logger(__name__)


@torch.no_grad()
def record_class_statistics(model, loader, device, *, mode: str = "ema", amp: bool = False,
                            channels_last: bool = False, progress: bool = True) -> int:
    """One eval-mode pass with labels; returns the number of images seen.

    fp32 by default, as the authors' ``forward_once.py``. With ``amp`` the BN inputs arrive in
    bf16 (statistics are still accumulated in fp32, or fp64 in exact mode, inside the layer).
    The labels must lie in [0, classes) (:func:`run_class_stats` checks the dataset's once): the
    loop never reads a value back from the device."""
    model.eval()
    set_class_stats_mode(model, mode)
    seen = 0
    for images, target in progress_bar(loader, desc="class statistics", leave=False, disable=not progress):
        images = to_channels_last(images.to(device, non_blocking=True), channels_last)
        target = target.to(device, non_blocking=True)
        with class_labels(model, target, check=False), autocast(device, amp):
            model(images)
        seen += target.numel()
    if mode == "exact":
        finalize_exact_class_stats(model)
    return seen


def default_output(weights: str) -> str:
    stem, _ = os.path.splitext(weights)
    return stem + "_class_bn.pth"


def run_class_stats(cfg: argparse.Namespace) -> dict:
    if not cfg.weights:
        raise InputValueError("--weights is required: the trained teacher checkpoint to add class statistics to")
    device = resolve_device(cfg.device)
    channels_last = on_for_cuda(cfg.channels_last, device)
    seed_everything(cfg.seed)
    root = require_data_path(cfg)
    train_set = build_dataset(cfg.dataset, root, "train", train_transform(cfg.image_size, cfg.dataset), cfg.classes)
    val_set = build_dataset(cfg.dataset, root, "val", val_transform(cfg.image_size, cfg.dataset), cfg.classes)
    output_lock = preflight.class_stats(cfg, train_set, val_set, cfg.output or default_output(cfg.weights))  # noqa: F841
    num_classes = cfg.num_classes or len(train_set.classes)
    model = build_model(cfg.model, num_classes, tiny_stem=cfg.tiny_stem, class_aware=True,
                        weights=cfg.weights)
    check_labels(torch.as_tensor(train_set.targets), num_classes)
    model = to_channels_last(model.to(device), channels_last)
    train_loader = build_loader(train_set, cfg, device, shuffle=True, sampler=SeededEpochSampler(len(train_set), cfg.seed))
    val_loader = build_loader(val_set, cfg, device, shuffle=False)

    check = dict(amp=cfg.amp, channels_last=channels_last, progress=cfg.progress)
    before = evaluate(model, val_loader, device, **check) if cfg.check_unchanged else None
    t0 = time.time()
    seen = record_class_statistics(model, train_loader, device, mode=cfg.stats_mode, **check)
    seconds = time.time() - t0
    after = evaluate(model, val_loader, device, **check)
    if before is not None and abs(before["top1"] - after["top1"]) > 1e-6:
        raise RuntimeError(f"validation top-1 changed during the class-statistics pass "
                           f"({before['top1']:.3f} -> {after['top1']:.3f}): the model was not in eval mode")
    output = cfg.output or default_output(cfg.weights)
    info = {"mode": cfg.stats_mode, "amp": bool(cfg.amp), "images": seen, "seconds": round(seconds, 2),
            "val_top1": after["top1"], "val_top5": after["top5"], "source_weights": cfg.weights}
    save_checkpoint(output, model, class_stats=info, num_classes=num_classes, classes=train_set.classes)
    log.info(f"class statistics over {seen} images in {seconds:.1f}s; val top-1 {after['top1']:.2f} "
             f"top-5 {after['top5']:.2f}; wrote {output}")
    return {**info, "output": output}
