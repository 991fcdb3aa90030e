"""Teacher training (squeeze stage), modelled on torchvision's references/classification/train.py.

One checkpoint per epoch (``checkpoint.pth``: model, optimizer, scheduler, epoch, RNG state)
written atomically, so ``--resume`` continues after the last finished epoch exactly as an
uninterrupted run would (data order and augmentation depend only on (seed, epoch, image):
:mod:`.sampling`); the final teacher is ``teacher.pth`` (``{"model": state_dict}``, the layout the
authors' scripts load).
"""
from __future__ import annotations

import argparse
import os
import time

import torch
from timm.utils import accuracy
from torch import nn
from torch.utils.data import DataLoader

from ..data import build_dataset, train_transform, val_transform
from ..data.sampling import SeededEpochSampler, SeededItems
from ..engine import evaluate, hits
from ..models import build_model, save_checkpoint
from ..utils.io import atomic_torch_save, ensure_writable_dir
from ..utils.log import get_logger
from ..utils.errors import InputValueError
from ..utils.metrics import DeviceSums, MetricsLog
from ..utils.progress import progress_bar
from ..utils.runtime import (autocast, on_for_cuda, resolve_device, rng_state, seed_everything, set_cudnn_benchmark,
                             set_rng_state, to_channels_last)
from ..utils.safe_load import RESUME_FIX, safe_torch_load
from ..utils.schedule import warmup_cosine, warn_long_warmup
from . import preflight

log = get_logger(__name__)


def require_data_path(cfg: argparse.Namespace) -> str:
    if not cfg.data_path:
        raise InputValueError("--data-path is required (the dataset root)")
    return cfg.data_path


def build_loader(dataset, cfg: argparse.Namespace, device: torch.device, shuffle: bool,
                 sampler: SeededEpochSampler | None = None) -> DataLoader:
    """``sampler``: a :class:`SeededEpochSampler` for the training set (seeded augmentation);
    without it, the dataset in order (evaluation)."""
    if sampler is not None:
        dataset = SeededItems(dataset)
    return DataLoader(dataset, batch_size=cfg.batch_size, shuffle=shuffle and sampler is None, sampler=sampler,
                      num_workers=cfg.workers, pin_memory=device.type == "cuda",
                      persistent_workers=cfg.workers > 0, drop_last=False)


def train_one_epoch(model, criterion, optimizer, loader, device, epoch, cfg) -> dict[str, float]:
    model.train()
    sums = DeviceSums(("loss", "top1", "n"), device)
    bar = progress_bar(loader, desc=f"epoch {epoch + 1}/{cfg.epochs}", leave=False, disable=not cfg.progress)
    for step, (images, target) in enumerate(bar, 1):
        images = to_channels_last(images.to(device, non_blocking=True), cfg.channels_last)
        target = target.to(device, non_blocking=True)
        with autocast(device, cfg.amp):
            output = model(images)
        loss = criterion(output.float(), target)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        n = target.shape[0]
        sums.add(loss * n, hits(accuracy(output.detach().float(), target, topk=(1,))[0], n), n)
        if step % cfg.log_interval == 0 and cfg.progress:
            now = sums.read()  # the only host synchronisation of the loop
            bar.set_postfix(loss=f"{now['loss'] / now['n']:.3f}", lr=f"{optimizer.param_groups[0]['lr']:.4f}")
    total = sums.read()
    seen = max(total["n"], 1)
    return {"train_loss": total["loss"] / seen, "train_top1": 100.0 * total["top1"] / seen}


def run_teacher_training(cfg: argparse.Namespace) -> dict:
    """Train a teacher; returns the final validation metrics and the teacher path."""
    device = resolve_device(cfg.device)
    cfg.amp = on_for_cuda(cfg.amp, device)
    cfg.channels_last = on_for_cuda(cfg.channels_last, device)
    seed_everything(cfg.seed)
    ensure_writable_dir(cfg.output_dir, "teacher output directory", owner="squeeze")
    root = require_data_path(cfg)
    train_set = build_dataset(cfg.dataset, root, "train", train_transform(cfg.image_size, cfg.dataset), cfg.classes)
    val_set = build_dataset(cfg.dataset, root, "val", val_transform(cfg.image_size, cfg.dataset), cfg.classes)
    output_lock = preflight.squeeze_train(cfg, train_set, val_set)  # noqa: F841 - held for the whole run
    num_classes = cfg.num_classes or len(train_set.classes)
    set_cudnn_benchmark(device)

    model = build_model(cfg.model, num_classes, tiny_stem=cfg.tiny_stem)
    model = to_channels_last(model.to(device), cfg.channels_last)
    criterion = nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
    optimizer = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum,
                                weight_decay=cfg.weight_decay)
    scheduler = warmup_cosine(optimizer, cfg.epochs, cfg.warmup_epochs, cfg.warmup_start_factor)
    warn_long_warmup(cfg.warmup_epochs, cfg.epochs, "lower --warmup-epochs (or the config's warmup_epochs key) "
                                                    "or raise --epochs")

    ckpt_path = os.path.join(cfg.output_dir, "checkpoint.pth")
    start_epoch = 0
    rng = None
    if cfg.resume:
        if not os.path.isfile(ckpt_path):
            raise FileNotFoundError(f"--resume: no checkpoint at {ckpt_path}; run without --resume to start")
        state = safe_torch_load(ckpt_path, what="--resume: checkpoint", fix=RESUME_FIX)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        start_epoch = state["epoch"] + 1
        try:
            scheduler.load_state_dict(state["lr_scheduler"])
        except KeyError:  # a checkpoint written with the former LambdaLR: replay its epochs
            for _ in range(start_epoch):
                scheduler.step()
        rng = state["rng"] if isinstance(state["rng"], dict) else {"torch": state["rng"]}
        log.info(f"resumed from {ckpt_path} at epoch {start_epoch}")

    metrics_log = MetricsLog(os.path.join(cfg.output_dir, "metrics"))
    sampler = SeededEpochSampler(len(train_set), cfg.seed)
    train_loader = build_loader(train_set, cfg, device, shuffle=True, sampler=sampler)
    val_loader = build_loader(val_set, cfg, device, shuffle=False)
    if rng is not None:
        set_rng_state({**rng_state(), **rng})
    metrics: dict = {}
    for epoch in range(start_epoch, cfg.epochs):
        t0 = time.time()
        sampler.set_epoch(epoch)
        record = {"epoch": epoch + 1, "lr": optimizer.param_groups[0]["lr"]}
        record.update(train_one_epoch(model, criterion, optimizer, train_loader, device, epoch, cfg))
        scheduler.step()
        if (epoch + 1) % cfg.val_interval == 0 or epoch + 1 == cfg.epochs:
            val = evaluate(model, val_loader, device, amp=cfg.amp, channels_last=cfg.channels_last,
                           progress=cfg.progress)
            record.update({"val_top1": val["top1"], "val_top5": val["top5"], "val_loss": val["loss"]})
        record["epoch_seconds"] = round(time.time() - t0, 2)
        metrics_log.append(record)
        log.info(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in record.items()))
        atomic_torch_save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                           "lr_scheduler": scheduler.state_dict(), "epoch": epoch,
                           "rng": rng_state(), "config": vars(cfg), "classes": train_set.classes}, ckpt_path)
        metrics = record
    teacher_path = os.path.join(cfg.output_dir, "teacher.pth")
    if start_epoch < cfg.epochs or not os.path.isfile(teacher_path):
        save_checkpoint(teacher_path, model, config=vars(cfg), num_classes=num_classes, classes=train_set.classes)
    return {**metrics, "teacher": teacher_path}
