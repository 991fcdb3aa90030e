"""Student training on distilled images + (pruned) stored soft labels, and evaluation.

Reproduces the authors' ``train_FKD_label_pruning_batch.py``: per training epoch the pruning plan
picks stored batches; each batch's images are replayed with the recorded crop/flip/mix; the student
minimises KL(teacher || student) at temperature T (:func:`train_one_epoch`); the LR schedule steps
once per epoch; the real validation set is evaluated after epoch 1, every ``val_interval`` epochs
and after the last. A checkpoint per epoch (:mod:`lpld.validate.checkpoint`) makes ``--resume``
continue exactly where it stopped: the batches of an epoch depend only on ``(seed, epoch)``, and
dropout continues its random stream.

The run is built once (:func:`build_student`), then trained epoch by epoch. Each epoch has a kind
(:func:`epoch_kinds`; every epoch is ``soft``, knowledge distillation on the stored labels, so
far) and :func:`train_epoch` runs an epoch of its kind with the run's one model, optimizer,
scheduler and EMA: another kind of epoch is one more function beside :func:`train_one_epoch`.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import math
import os
import time
from typing import Any, Mapping

import torch
from timm.utils import accuracy
from torch.utils.data import DataLoader, Subset

from ..config import ConfigError, resolve
from ..data import ImageFolder, build_val_dataset, canonical_dataset, normalization, val_transform
from ..device_views import ImageBank
from ..engine import evaluate, hits
from ..models import apply_tiny_stem, build_model
from ..utils.io import atomic_json_dump, ensure_writable_dir
from ..utils.log import get_logger
from ..utils.metrics import DeviceSums, MetricsLog
from ..utils.progress import progress_bar
from ..utils.runtime import (autocast, keep_logits_fp32, on_for_cuda, rng_state, seed_everything,
                             set_cudnn_benchmark, set_rng_state, to_channels_last)
from . import preflight
from .checkpoint import Progress, StudentCheckpoints
from .distributed import (DistInfo, all_reduce_, barrier, broadcast_buffers, gather_objects, init_distributed,
                          shard_indices)
from .inputs import label_bytes, make_plan, open_store_checked
from .loader import BatchInputs, PlannedBatchSampler, SoftLabelBatches, build_train_loader
from .loss import distillation_loss, probability_target, resolve_loss_variant
from .optim import ModelEma, build_optimizer, build_scheduler
from .pruning import PruningPlan
from .schema import PRUNE_RATIOS, VALIDATE_SCHEMA
from .temperature import StudentTemperature, TemperatureSchedule

log = get_logger(__name__)
FINAL = "final.json"
EPOCH_KINDS = ("soft",)  # soft: knowledge distillation on the stored soft labels (train_one_epoch)


def as_config(cfg: argparse.Namespace | Mapping[str, Any]) -> argparse.Namespace:
    """Validate a namespace (from ``parse_config``) or a plain dict against the schema."""
    values = dict(vars(cfg) if isinstance(cfg, argparse.Namespace) else cfg)
    values.pop("config", None)
    ns = resolve(VALIDATE_SCHEMA, [("run_validate", values)])
    if ns.train_epochs is None or ns.train_epochs <= 0:
        ns.train_epochs = ns.epochs
    if not ns.label_dir and ns.fkd_path:
        ns.label_dir = ns.fkd_path
    for key in ("train_dir", "label_dir", "val_dir"):
        if not getattr(ns, key):
            raise ConfigError(f"option '{key}' is required (--{key.replace('_', '-')})")
    if ns.batch_size % ns.gradient_accumulation_steps:
        raise ConfigError(f"batch_size {ns.batch_size} is not divisible by gradient_accumulation_steps "
                          f"{ns.gradient_accumulation_steps}")
    if ns.checkpoint_interval < 1:
        raise ConfigError(f"checkpoint_interval must be >= 1; got {ns.checkpoint_interval}")
    if ns.val_interval < 1:
        raise ConfigError(f"val_interval must be >= 1; got {ns.val_interval}")
    try:
        temperatures(ns)
    except ValueError as err:
        raise ConfigError(str(err)) from err
    return ns


def temperatures(cfg) -> tuple[TemperatureSchedule, StudentTemperature]:
    """The teacher's temperature schedule and the student's temperature from the config
    (``train_FKD_LPQLD.py`` 514-536, 774-780): ``temp_stu_dynamic > 0`` calibrated, else
    ``temp_stu > 0`` fixed, else the teacher's. The defaults are LPLD's fixed T."""
    schedule = TemperatureSchedule(kind=cfg.temp_scheduler, base=cfg.temperature, train_epochs=cfg.train_epochs,
                                   step_size=cfg.temp_step_size, gamma=cfg.temp_step_gamma, t_min=cfg.temp_min)
    if cfg.temp_stu_dynamic and cfg.temp_stu_dynamic > 0:
        student = StudentTemperature("calibrated", cfg.temp_stu_dynamic)
    elif cfg.temp_stu and cfg.temp_stu > 0:
        student = StudentTemperature("fixed", cfg.temp_stu)
    else:
        student = StudentTemperature("teacher")
    return schedule, student


# --- training -----------------------------------------------------------------------------------
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
    totals = all_reduce_(sums.values, info).tolist()  # waits for the device: the epoch time is real
    elapsed = time.perf_counter() - t_epoch
    loss, c1, c5, seen = totals
    seen = max(seen, 1)
    return {"train_loss": loss / seen, "train_top1": 100.0 * c1 / seen, "train_top5": 100.0 * c5 / seen,
            "train_images": int(round(seen)), "epoch_time_s": elapsed, "images_per_s": seen / max(elapsed, 1e-9),
            "data_wait_frac": data_wait / max(elapsed, 1e-9), "steps": steps, "temperature": t_teacher,
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


def _unwrap(model):
    """The student itself, under DDP and/or torch.compile wrappers."""
    while hasattr(model, "module") or hasattr(model, "_orig_mod"):
        model = getattr(model, "_orig_mod", None) or model.module
    return model


def run_validate(cfg: argparse.Namespace | Mapping[str, Any]) -> dict[str, Any]:
    """Train a student from distilled images + stored soft labels and evaluate it.

    ``cfg``: a namespace from ``parse_config(VALIDATE_SCHEMA, ...)`` or a dict of schema options.
    Returns the final metrics (also written to ``output_dir/final.json``): ``top1``, ``top5``
    (percent, last epoch), ``best_top1``, ``label_bytes_used``, ``label_batches_used``, ...
    Under torchrun every process calls this; all return the same metrics.
    """
    cfg = as_config(cfg)
    info, device = init_distributed(cfg.device)
    try:
        result = _run(cfg, info, device)
    except BaseException:
        if info.enabled and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
        raise
    if info.enabled and torch.distributed.is_initialized():
        barrier(info)
        torch.distributed.destroy_process_group()
    return result


# --- the run ------------------------------------------------------------------------------------
@dataclasses.dataclass
class Student:
    """Everything one student run trains and evaluates with, built once by :func:`build_student`."""
    cfg: argparse.Namespace
    info: DistInfo
    device: torch.device
    images: ImageFolder
    store: Any
    plan: PruningPlan
    num_classes: int
    tiny_stem: bool
    variant: str
    model: torch.nn.Module           # the student itself (what checkpoints hold)
    train_model: torch.nn.Module     # the one trained: under DDP and/or torch.compile
    optimizer: torch.optim.Optimizer
    scheduler: Any
    ema: ModelEma | None
    schedule: TemperatureSchedule
    temperature: StudentTemperature  # the student's
    sampler: PlannedBatchSampler
    loader: DataLoader
    inputs: BatchInputs
    val_loader: DataLoader

    @property
    def evaluated(self) -> torch.nn.Module:
        """The model evaluated and kept as the best one: the EMA when there is one."""
        return self.ema.module if self.ema is not None else self.model

    def evaluate(self) -> dict:
        cfg = self.cfg
        return evaluate(self.evaluated, self.val_loader, self.device, amp=cfg.amp,
                        channels_last=self.inputs.channels_last, progress=cfg.progress and self.info.is_main)


def epoch_kinds(cfg) -> list[str]:
    """The kind of each training epoch, in order (:data:`EPOCH_KINDS`)."""
    return ["soft"] * cfg.train_epochs


def train_epoch(kind: str, run: Student, epoch: int) -> dict[str, float]:
    """One training epoch of kind ``kind`` (:data:`EPOCH_KINDS`) with the run's model and optimizer."""
    if kind == "soft":
        return train_one_epoch(run.train_model, run.ema, run.optimizer, run.loader, run.device, run.cfg,
                               run.variant, epoch, run.info, run.inputs, temperature=run.schedule.at(epoch),
                               student=run.temperature)
    raise ValueError(f"unknown epoch kind {kind!r}; expected one of {EPOCH_KINDS}")


def build_student(cfg, info: DistInfo, device: torch.device, dataset: str, checkpoints: StudentCheckpoints
                  ) -> tuple[Student, Progress]:
    """The run's data, model, optimizer, schedules and loaders, resumed from its checkpoint when
    asked; the random streams are restored last (building drew from the global RNG)."""
    images = ImageFolder(cfg.train_dir)
    store, num_classes, size = open_store_checked(cfg, dataset, len(images))
    plan = make_plan(cfg, store)
    variant = resolve_loss_variant(cfg.loss, dataset)
    mean, std = normalization(dataset)
    cfg.amp = on_for_cuda(cfg.amp, device)
    channels_last = on_for_cuda(cfg.channels_last, device)
    set_cudnn_benchmark(device)  # every step has the batch's shapes

    seed_everything(cfg.seed)
    model = build_model(cfg.model, num_classes)
    # the authors replace conv1/maxpool for every Tiny-ImageNet student; on a model without them
    # (MobileNet, EfficientNet, ...) their assignment changes nothing, so "auto" skips it there
    has_stem = hasattr(model, "conv1") and hasattr(model, "maxpool")
    tiny_stem = cfg.tiny_stem if cfg.tiny_stem is not None else (dataset == "tiny" and has_stem)
    if tiny_stem:
        apply_tiny_stem(model)
    if cfg.amp:
        keep_logits_fp32(model)
    model = to_channels_last(model.to(device), channels_last)
    optimizer = build_optimizer(model, cfg, device)
    scheduler = build_scheduler(optimizer, cfg, dataset)
    ema = ModelEma(model, beta=cfg.ema_decay) if cfg.ema else None
    schedule, student = temperatures(cfg)
    progress = checkpoints.resume(model, optimizer, scheduler, ema, student, info.rank, info.is_main)

    train_model = model
    if info.enabled:
        train_model = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)
    if cfg.compile:
        train_model = torch.compile(train_model, backend=cfg.compile_backend)

    bank = ImageBank.from_folder(images, device, size) if cfg.input_path == "device" else None
    train_ds = SoftLabelBatches(images, store, size, mean, std, cache_images=cfg.cache_images,
                                views_on_device=bank is not None)
    sampler = PlannedBatchSampler(plan, info.rank, info.world_size, cfg.max_steps_per_epoch)
    pin = device.type == "cuda"
    loader = build_train_loader(train_ds, sampler, workers=cfg.workers, pin_memory=pin,
                                fetcher=cfg.fetcher, prefetch_factor=cfg.prefetch_factor, seed=cfg.seed)
    inputs = BatchInputs(device, mean, std, channels_last=channels_last, bank=bank, num_classes=num_classes)
    val_ds = build_val_dataset(dataset, cfg.val_dir, val_transform(size, dataset))
    if info.enabled:
        val_ds = Subset(val_ds, shard_indices(len(val_ds), info))
    val_bs = cfg.batch_size // 4 if cfg.batch_size > 64 else 64  # authors' val batch size
    val_workers = min(cfg.workers, 8)
    val_loader = DataLoader(val_ds, batch_size=val_bs, shuffle=False, num_workers=val_workers, pin_memory=pin,
                            persistent_workers=val_workers > 0, generator=torch.Generator().manual_seed(cfg.seed))
    run = Student(cfg, info, device, images, store, plan, num_classes, tiny_stem, variant, model, train_model,
                  optimizer, scheduler, ema, schedule, student, sampler, loader, inputs, val_loader)
    return run, progress


def _run(cfg, info: DistInfo, device: torch.device) -> dict[str, Any]:
    dataset = canonical_dataset(cfg.dataset)
    ensure_writable_dir(cfg.output_dir, "student output directory", owner="validate")
    checked = preflight.validate(cfg, dataset)  # lock, labels bound to these images, class lists
    checkpoints = StudentCheckpoints(cfg, cfg.output_dir)
    run, progress = build_student(cfg, info, device, dataset, checkpoints)
    log_file = MetricsLog(os.path.join(cfg.output_dir, "metrics")) if info.is_main else None
    if info.is_main:
        log.info(f"validate: {run.plan.describe()}; student {cfg.model} ({run.num_classes} classes, tiny stem "
                 f"{run.tiny_stem}); loss {run.variant}, {run.schedule.describe()}, student T {run.temperature.mode}"
                 f"{'' if run.temperature.mode == 'teacher' else ' ' + format(run.temperature.value, 'g')}; "
                 f"{len(run.images)} images, {run.store.batches_per_epoch} batches/epoch; world size "
                 f"{info.world_size}; device {device}")
    if progress.rng is not None:
        set_rng_state(progress.rng)  # last: building the model and the loaders drew from the global RNG
    kinds = epoch_kinds(cfg)
    epoch_stats: dict[str, Any] = {}
    for epoch in range(progress.epoch, cfg.train_epochs):
        lr = run.optimizer.param_groups[0]["lr"]
        run.sampler.set_epoch(epoch)
        epoch_stats = train_epoch(kinds[epoch], run, epoch)
        run.scheduler.step()
        # every rank evaluates (its shard of) the very model rank 0 saves
        broadcast_buffers(run.model, info)
        if run.ema is not None:
            broadcast_buffers(run.ema.module, info)
        record = {"epoch": epoch + 1, "lr": lr, **epoch_stats}
        progress.epoch = epoch + 1
        if epoch % cfg.val_interval == 0 or epoch == cfg.train_epochs - 1:
            progress.last_val = run.evaluate()
            record.update({"val_top1": progress.last_val["top1"], "val_top5": progress.last_val["top5"],
                           "val_loss": progress.last_val["loss"]})
            progress.best_top1 = max(progress.best_top1, progress.last_val["top1"])
        save = checkpoints.due(epoch)
        rngs = gather_objects(rng_state(), info) if save else None
        if info.is_main:
            log_file.append(record)
            if save:
                checkpoints.save(run.model, run.optimizer, run.scheduler, run.ema, run.temperature, progress, rngs,
                                 dataclasses.asdict(run.plan), checked.classes)
            if "val_top1" in record and record["val_top1"] >= progress.best_top1:
                checkpoints.save_best(run.evaluated, progress)
            msg = (f"epoch {epoch + 1}/{cfg.train_epochs} lr {lr:.5f} loss {record['train_loss']:.4f} "
                   f"{record['images_per_s']:.0f} img/s")
            if "val_top1" in record:
                msg += f" | val top1 {record['val_top1']:.2f} top5 {record['val_top5']:.2f}"
            log.info(msg)
    return finish(run, progress, epoch_stats)


def finish(run: Student, progress: Progress, epoch_stats: dict[str, Any]) -> dict[str, Any]:
    """The final metrics (``final.json``, written by the main process)."""
    cfg = run.cfg
    if progress.last_val is None:  # resumed a finished run without a stored evaluation
        progress.last_val = run.evaluate()
        progress.best_top1 = max(progress.best_top1, progress.last_val["top1"])
    last_val = progress.last_val
    used = run.plan.used_batch_ids()
    result = {
        "top1": last_val["top1"], "top5": last_val["top5"], "val_loss": last_val["loss"],
        "train_loss": epoch_stats.get("train_loss"),
        "best_top1": progress.best_top1, "dataset": cfg.dataset, "model": cfg.model, "epochs": cfg.train_epochs,
        "prune_ratio": cfg.prune_ratio, "compression": PRUNE_RATIOS.get(cfg.prune_ratio, ""),
        "prune_metric": cfg.prune_metric, "granularity": cfg.granularity,
        "label_batches_used": len(used),
        "label_bytes_store": run.store.nbytes(), "world_size": run.info.world_size,
        "images_per_s": epoch_stats.get("images_per_s"), "output_dir": cfg.output_dir,
        **label_bytes(cfg, run.store, run.plan, len(run.images), len(used)),
        "temp_scheduler": cfg.temp_scheduler, "temperature_last": epoch_stats.get("temperature"),
        "student_temperature_last": epoch_stats.get("student_temperature"), "prune_mode": cfg.prune_mode,
    }
    if run.info.is_main:
        atomic_json_dump(result, os.path.join(cfg.output_dir, FINAL))
    return result
