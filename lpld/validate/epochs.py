"""One student epoch of each kind (``EPOCH_KINDS`` in :mod:`lpld.validate.train`), on the run's one
model, optimizer and EMA:

* ``soft``: knowledge distillation on stored soft labels (:func:`train_one_epoch`, the authors'
  ``train()``), with LPQLD's calibrated student temperature (:func:`calibrate`);
* ``hard``: the distilled images with their own class labels, CutMix and label smoothing
  (:func:`train_hard_epoch`, HALD's ``hard_train``; the batches come from :mod:`lpld.validate.hard`).

Both keep loss and accuracy on the device until the log interval (one host synchronisation there)
and return the same record (:func:`epoch_summary`).
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import time

import torch
from timm.utils import accuracy

from ..engine import hits
from ..utils.metrics import DeviceSums
from ..utils.progress import progress_bar
from ..utils.runtime import autocast
from .distributed import DistInfo, all_reduce_, gather_objects
from .hard import HardEpochs, hard_label_loss
from .loader import BatchInputs
from .loss import distillation_loss, probability_target
from .temperature import StudentTemperature


def train_one_epoch(model, ema, optimizer, loader, device, cfg, variant: str, epoch: int,
                    info: DistInfo, inputs: BatchInputs, temperature: float | None = None,
                    student: StudentTemperature | None = None) -> dict[str, float]:
    """One epoch of the authors' ``train()``: per stored batch, ``ceil(rows / (batch_size / accum))``
    forward/backward passes (the last in sync across ranks), an EMA step after each pass, one
    optimiser step. Loss and accuracy stay on the device until the log interval.

    ``temperature``: the teacher's T of this epoch (default ``cfg.temperature``); ``student``: the
    student's temperature, calibrated after the epoch on its last micro-batch (LPQLD)."""
    model.train()
    t_teacher = float(cfg.temperature if temperature is None else temperature)
    t_student = None if student is None else student.current(t_teacher)
    last_pass = None
    module = _unwrap(model)
    chunk_rows = cfg.batch_size // cfg.gradient_accumulation_steps
    sums = DeviceSums(("loss", "top1", "top5", "n"), device)
    data_wait = 0.0
    steps = 0
    seen_batches = []
    t_epoch = t_ready = time.perf_counter()
    bar = progress_bar(loader, desc=f"epoch {epoch + 1}/{cfg.train_epochs}", leave=False,
                       disable=not (cfg.progress and info.is_main))
    for batch in bar:
        data_wait += time.perf_counter() - t_ready
        images, soft, target = inputs(batch)
        if cfg.log_batches:
            seen_batches.append({"epoch": epoch, "step": steps, "batch_id": int(batch.batch_id),
                                 "image_indices": batch.image_indices.tolist()})
        # Every rank makes the same number of passes (DDP pairs their gradient all-reduces), each
        # over its share of the rows, possibly none. Summed losses scaled by world / rows: after
        # DDP averages the ranks' gradients, the step follows the whole stored batch's batchmean
        # however unevenly its rows are split, and a rank without rows adds 0, not NaN.
        passes = math.ceil(batch.global_rows / chunk_rows)
        scale = info.world_size / batch.global_rows
        optimizer.zero_grad(set_to_none=True)
        for k, (x, t, y) in enumerate(zip(images.tensor_split(passes), soft.tensor_split(passes),
                                          target.tensor_split(passes))):
            in_sync = k == passes - 1 or not info.enabled
            with contextlib.nullcontext() if in_sync else model.no_sync():
                with autocast(device, cfg.amp):
                    out = model(x)
                loss = distillation_loss(out, t, t_teacher, variant, cfg.label_smoothing,
                                         student_temperature=t_student, reduction="sum")
                (loss * scale).backward()
            if k == passes - 1:
                last_pass = (out.detach(), t)
            if ema is not None:
                ema.step(module)  # per forward/backward pass, as the authors call it
            n = x.shape[0]
            if n:
                hits1, hits5 = (hits(acc, n) for acc in accuracy(out.detach().float(), y, topk=(1, 5)))
                sums.add(loss, hits1, hits5, n)
        optimizer.step()
        steps += 1
        if steps % cfg.log_interval == 0 and cfg.progress and info.is_main:
            now = sums.read()  # the only host synchronisation of the loop
            bar.set_postfix(loss=f"{now['loss'] / max(now['n'], 1):.4f}")
        t_ready = time.perf_counter()
    if seen_batches:
        with open(os.path.join(cfg.output_dir, f"batches_rank{info.rank}.jsonl"), "a") as f:
            f.writelines(json.dumps(r) + "\n" for r in seen_batches)
    if student is not None and student.mode == "calibrated" and last_pass is not None:
        calibrate(student, last_pass, t_teacher, cfg.label_smoothing, info)
    return {**epoch_summary(sums, info, t_epoch, data_wait, steps), "temperature": t_teacher,
            "student_temperature": t_student if t_student is not None else t_teacher}


def calibrate(student: StudentTemperature, last_pass, temperature: float, label_smoothing: float,
              info: DistInfo) -> float:
    """The student temperature for the next epoch, fitted on the epoch's last micro-batch
    (``train_FKD_LPQLD.py`` 813-825). Under DDP each rank holds a slice of that micro-batch: the
    slices are gathered in rank order, so every rank fits on the same rows and picks the same T."""
    out, soft = last_pass
    with torch.no_grad():
        target = probability_target(soft, temperature, label_smoothing)
        pieces = gather_objects((out.detach().float().cpu(), target.cpu()), info)
    logits = torch.cat([p[0] for p in pieces])
    return student.end_epoch(logits, torch.cat([p[1] for p in pieces]))


def train_hard_epoch(model, ema, optimizer, hard: HardEpochs, device, cfg, epoch: int,
                     info: DistInfo) -> dict[str, float]:
    """One hard epoch (HALD's ``hard_train``, ``train_fkd.py:541-586``): per batch of the distilled
    images, CutMixed with smoothed one-hot targets (:class:`lpld.validate.hard.HardEpochs`), the soft
    cross-entropy and one optimiser step; an EMA step after each pass. No stored label is read.

    Under DDP each rank trains on its rows of the global batch; the summed loss is scaled by world
    size / the batch's rows, so the averaged gradient is that of the whole batch's mean."""
    model.train()
    module = _unwrap(model)
    sums = DeviceSums(("loss", "top1", "top5", "n"), device)
    data_wait = 0.0
    steps = 0
    t_epoch = t_ready = time.perf_counter()
    bar = progress_bar(hard, desc=f"epoch {epoch + 1}/{cfg.train_epochs} (hard)", leave=False,
                       disable=not (cfg.progress and info.is_main))
    for batch in bar:
        data_wait += time.perf_counter() - t_ready
        optimizer.zero_grad(set_to_none=True)
        with autocast(device, cfg.amp):
            out = model(batch.images)
        loss = hard_label_loss(out, batch.target, reduction="sum")
        (loss * (info.world_size / batch.global_rows)).backward()
        if ema is not None:
            ema.step(module)
        n = batch.images.shape[0]
        if n:  # accuracy against the rows' own classes, as theirs (train_fkd.py:566)
            hits1, hits5 = (hits(acc, n) for acc in accuracy(out.detach().float(), batch.labels, topk=(1, 5)))
            sums.add(loss.detach(), hits1, hits5, n)
        optimizer.step()
        steps += 1
        if steps % cfg.log_interval == 0 and cfg.progress and info.is_main:
            now = sums.read()
            bar.set_postfix(loss=f"{now['loss'] / max(now['n'], 1):.4f}")
        t_ready = time.perf_counter()
    return {**epoch_summary(sums, info, t_epoch, data_wait, steps), "temperature": None,
            "student_temperature": None}


def epoch_summary(sums: DeviceSums, info: DistInfo, t_epoch: float, data_wait: float, steps: int) -> dict[str, float]:
    """An epoch's record: loss and accuracy over every rank's rows, images/s, the share of time spent
    waiting for data. The all-reduce waits for the device, so the epoch time is real."""
    loss, c1, c5, seen = all_reduce_(sums.values, info).tolist()
    elapsed = time.perf_counter() - t_epoch
    seen = max(seen, 1)
    return {"train_loss": loss / seen, "train_top1": 100.0 * c1 / seen, "train_top5": 100.0 * c5 / seen,
            "train_images": int(round(seen)), "epoch_time_s": elapsed, "images_per_s": seen / max(elapsed, 1e-9),
            "data_wait_frac": data_wait / max(elapsed, 1e-9), "steps": steps}


def _unwrap(model):
    """The student itself, under DDP and/or torch.compile wrappers."""
    while hasattr(model, "module") or hasattr(model, "_orig_mod"):
        model = getattr(model, "_orig_mod", None) or model.module
    return model
