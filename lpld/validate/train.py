"""Student training on distilled images + (pruned) stored soft labels, and evaluation.

Reproduces the authors' ``train_FKD_label_pruning_batch.py``: per training epoch the pruning plan
picks stored batches; each batch's images are replayed with the recorded crop/flip/mix; the student
minimises KL(teacher || student) at temperature T (:func:`train_one_epoch`); the LR schedule steps
once per epoch; the real validation set is evaluated after epoch 1, every ``val_interval`` epochs
and after the last. A checkpoint per epoch (:mod:`lpld.validate.checkpoint`) makes ``--resume``
continue exactly where it stopped: the batches of an epoch depend only on ``(seed, epoch)``, and
dropout continues its random stream.

The run is built once (:func:`build_student`), then trained epoch by epoch. Each epoch has a kind
(:func:`epoch_kinds`, from ``label_plan``: :mod:`lpld.validate.label_plan`): ``soft``, knowledge
distillation on the stored labels (:func:`train_one_epoch`), or ``hard``, the distilled images with
their own class labels, CutMix and label smoothing (:func:`train_hard_epoch`, HALD's hard epoch,
batches from :mod:`lpld.validate.hard`); both live in :mod:`lpld.validate.epochs`. :func:`train_epoch` runs an epoch of its kind with the run's one model,
optimizer, per-epoch LR schedule (over all epochs of both kinds) and EMA. A run whose plan has no
soft epoch (``label_plan hard``) opens no label store at all, and a hard epoch never reads one.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
from typing import Any, Mapping

import torch
from torch.utils.data import DataLoader, Subset

from ..config import ConfigError, resolve
from ..data import (DATASET_IMAGE_SIZE, ImageFolder, build_val_dataset, canonical_dataset, dataset_num_classes,
                    load_rgb, normalization, val_transform)
from ..device_views import ImageBank
from ..engine import evaluate
from ..models import apply_tiny_stem, build_model
from ..utils.io import atomic_json_dump, ensure_writable_dir
from ..utils.log import get_logger
from ..utils.metrics import MetricsLog
from ..utils.runtime import (keep_logits_fp32, on_for_cuda, rng_state, seed_everything, set_cudnn_benchmark,
                             set_rng_state, to_channels_last)
from . import preflight
from .checkpoint import Progress, StudentCheckpoints
from .distributed import DistInfo, barrier, broadcast_buffers, gather_objects, init_distributed, shard_indices
from .epochs import train_hard_epoch, train_one_epoch
from .hard import HardEpochs
from .inputs import label_bytes, make_plan, open_store_checked, pool_epochs
from .label_plan import SoftPool, describe_segments, is_mixed, needs_block, segments
from .pruning import PruningPlan
from .loader import BatchInputs, PlannedBatchSampler, SoftLabelBatches, build_train_loader
from .loss import resolve_loss_variant
from .optim import ModelEma, build_optimizer, build_scheduler
from .schema import PRUNE_RATIOS, VALIDATE_SCHEMA
from .temperature import StudentTemperature, TemperatureSchedule

log = get_logger(__name__)
FINAL = "final.json"
# soft: knowledge distillation on the stored soft labels (train_one_epoch); hard: the distilled
# images' class labels with CutMix and label smoothing, no stored label read (train_hard_epoch)
EPOCH_KINDS = ("soft", "hard")


def as_config(cfg: argparse.Namespace | Mapping[str, Any]) -> argparse.Namespace:
    """Validate a namespace (from ``parse_config``) or a plain dict against the schema."""
    values = dict(vars(cfg) if isinstance(cfg, argparse.Namespace) else cfg)
    values.pop("config", None)
    ns = resolve(VALIDATE_SCHEMA, [("run_validate", values)])
    if ns.train_epochs is None or ns.train_epochs <= 0:
        ns.train_epochs = ns.epochs
    if not ns.label_dir and ns.fkd_path:
        ns.label_dir = ns.fkd_path
    if needs_block(ns.label_plan) and ns.plan_block is None and not ns.label_dir:
        raise ConfigError(f"label_plan {ns.label_plan} alternates blocks of plan_block epochs (HALD's n), which "
                          f"defaults to the label store's stored epochs, but no label_dir is given: set --plan-block N "
                          f"(or --label-dir)")
    try:
        kinds = epoch_kinds(ns, block=ns.plan_block or 1)
    except ValueError as err:
        raise ConfigError(str(err)) from err
    needed = ("train_dir", "label_dir", "val_dir") if "soft" in kinds or needs_block(ns.label_plan) else \
        ("train_dir", "val_dir")
    for key in needed:
        if not getattr(ns, key):
            why = f" (label_plan {ns.label_plan} has soft epochs)" if key == "label_dir" and ns.label_plan != "soft" else ""
            raise ConfigError(f"option '{key}' is required (--{key.replace('_', '-')}){why}")
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
    store: Any                       # None: the plan has no soft epoch (label_plan hard)
    plan: PruningPlan | SoftPool | None  # label_plan soft: LPLD's; a mixed plan: HALD's pool; hard: none
    kinds: list[str]                 # the kind of every epoch (EPOCH_KINDS)
    segments: list[tuple[str, int]]  # the label plan
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
    sampler: PlannedBatchSampler | None  # soft epochs (None without)
    loader: DataLoader | None
    inputs: BatchInputs | None
    hard: HardEpochs | None              # hard epochs (None without)
    val_loader: DataLoader

    @property
    def evaluated(self) -> torch.nn.Module:
        """The model evaluated and kept as the best one: the EMA when there is one."""
        return self.ema.module if self.ema is not None else self.model

    def evaluate(self) -> dict:
        cfg = self.cfg
        return evaluate(self.evaluated, self.val_loader, self.device, amp=cfg.amp,
                        channels_last=self.channels_last, progress=cfg.progress and self.info.is_main)

    @property
    def channels_last(self) -> bool:
        return self.inputs.channels_last if self.inputs is not None else self.hard.channels_last

    def describe_labels(self) -> str:
        if self.plan is None:
            return f"label plan {describe_segments(self.segments)}: class labels only, no label store"
        return self.plan.describe()


def plan_segments(cfg, block: int | None = None) -> list[tuple[str, int]]:
    """The run's label plan as ``[(kind, epochs), ...]`` (:func:`lpld.validate.label_plan.segments`);
    ``block``: HALD's ``n`` when ``plan_block`` is unset (the store's pool epochs)."""
    return segments(cfg.label_plan, cfg.train_epochs, cfg.soft_epochs, cfg.hard_epochs,
                    block=cfg.plan_block or block)


def epoch_kinds(cfg, block: int | None = None) -> list[str]:
    """The kind of each training epoch, in order (:data:`EPOCH_KINDS`)."""
    return [kind for kind, length in plan_segments(cfg, block) for _ in range(length)]


def train_epoch(kind: str, run: Student, epoch: int) -> dict[str, float]:
    """One training epoch of kind ``kind`` (:data:`EPOCH_KINDS`) with the run's model and optimizer."""
    if kind == "soft":
        run.sampler.set_epoch(epoch)
        return train_one_epoch(run.train_model, run.ema, run.optimizer, run.loader, run.device, run.cfg,
                               run.variant, epoch, run.info, run.inputs, temperature=run.schedule.at(epoch),
                               student=run.temperature)
    if kind == "hard":
        run.hard.set_epoch(epoch)
        return train_hard_epoch(run.train_model, run.ema, run.optimizer, run.hard, run.device, run.cfg, epoch,
                                run.info)
    raise ValueError(f"unknown epoch kind {kind!r}; expected one of {EPOCH_KINDS}")


def build_student(cfg, info: DistInfo, device: torch.device, dataset: str, checkpoints: StudentCheckpoints
                  ) -> tuple[Student, Progress]:
    """The run's data, model, optimizer, schedules and loaders, resumed from its checkpoint when
    asked; the random streams are restored last (building drew from the global RNG). Without a
    soft epoch in the plan no label store is opened; without a hard one no hard loader is built."""
    images = ImageFolder(cfg.train_dir)
    store = plan = None
    if uses_store(cfg):
        store, num_classes, size = open_store_checked(cfg, dataset, len(images))
        segs = plan_segments(cfg, block=_pool_block(cfg, store))
        plan = make_plan(cfg, store, segs)
    else:
        num_classes, size = hard_only_shape(cfg, dataset, images)
        segs = plan_segments(cfg)
    kinds = [kind for kind, length in segs for _ in range(length)]
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

    pin = device.type == "cuda"
    sampler = loader = inputs = hard = None
    if "soft" in kinds:
        bank = ImageBank.from_folder(images, device, size) if cfg.input_path == "device" else None
        train_ds = SoftLabelBatches(images, store, size, mean, std, cache_images=cfg.cache_images,
                                    views_on_device=bank is not None)
        sampler = PlannedBatchSampler(plan, info.rank, info.world_size, cfg.max_steps_per_epoch)
        loader = build_train_loader(train_ds, sampler, workers=cfg.workers, pin_memory=pin,
                                    fetcher=cfg.fetcher, prefetch_factor=cfg.prefetch_factor, seed=cfg.seed)
        inputs = BatchInputs(device, mean, std, channels_last=channels_last, bank=bank, num_classes=num_classes)
    if "hard" in kinds:
        hard = HardEpochs(images, size, dataset, num_classes=num_classes, device=device,
                          batch_size=cfg.hard_batch_size, smoothing=cfg.hard_label_smoothing,
                          alpha=cfg.hard_cutmix_alpha, seed=cfg.seed, rank=info.rank, world_size=info.world_size,
                          workers=cfg.workers, pin_memory=pin, prefetch_factor=cfg.prefetch_factor,
                          channels_last=channels_last)
    val_ds = build_val_dataset(dataset, cfg.val_dir, val_transform(size, dataset), cfg.classes)
    if info.enabled:
        val_ds = Subset(val_ds, shard_indices(len(val_ds), info))
    val_bs = cfg.batch_size // 4 if cfg.batch_size > 64 else 64  # authors' val batch size
    val_workers = min(cfg.workers, 8)
    val_loader = DataLoader(val_ds, batch_size=val_bs, shuffle=False, num_workers=val_workers, pin_memory=pin,
                            persistent_workers=val_workers > 0, generator=torch.Generator().manual_seed(cfg.seed))
    run = Student(cfg, info, device, images, store, plan, kinds, segs, num_classes, tiny_stem, variant, model,
                  train_model, optimizer, scheduler, ema, schedule, student, sampler, loader, inputs, hard, val_loader)
    return run, progress


def uses_store(cfg) -> bool:
    """Whether the run opens its label store: a plan with soft epochs, or S2-S5 whose block length
    comes from the store."""
    return cfg.label_plan == "soft" or (needs_block(cfg.label_plan) and cfg.plan_block is None) or \
        "soft" in epoch_kinds(cfg, block=cfg.plan_block or 1)


def _pool_block(cfg, store) -> int | None:
    """HALD's ``n`` by default: the store's whole pool epochs (a mixed plan only)."""
    if not is_mixed(cfg.label_plan):
        return None
    return max(pool_epochs(cfg, store), 1)


def hard_only_shape(cfg, dataset: str, images: ImageFolder) -> tuple[int, int]:
    """(classes, crop size) of a run without a label store: ``num_classes`` or the dataset's or the
    image folder's class count; ``image_size`` or the dataset preset's or the distilled images' own
    size (the first image's; recovered images are square)."""
    num_classes = cfg.num_classes or dataset_num_classes(dataset, cfg.classes) or len(images.classes)
    size = cfg.image_size or DATASET_IMAGE_SIZE.get(dataset)
    if size is None:
        width, height = load_rgb(images.samples[0][0]).size
        size = min(width, height)
    return int(num_classes), int(size)


def _run(cfg, info: DistInfo, device: torch.device) -> dict[str, Any]:
    dataset = canonical_dataset(cfg.dataset)
    ensure_writable_dir(cfg.output_dir, "student output directory", owner="validate")
    checked = preflight.validate(cfg, dataset, uses_store(cfg), "hard" in epoch_kinds(cfg, block=cfg.plan_block or 1))
    checkpoints = StudentCheckpoints(cfg, cfg.output_dir)
    run, progress = build_student(cfg, info, device, dataset, checkpoints)
    log_file = MetricsLog(os.path.join(cfg.output_dir, "metrics")) if info.is_main else None
    if info.is_main:
        soft = (f"loss {run.variant}, {run.schedule.describe()}, student T {run.temperature.mode}"
                f"{'' if run.temperature.mode == 'teacher' else ' ' + format(run.temperature.value, 'g')}; "
                f"{run.store.batches_per_epoch} batches/epoch; " if run.store is not None else "")
        hard = (f"hard epochs: batch {cfg.hard_batch_size}, CutMix alpha {cfg.hard_cutmix_alpha:g}, label smoothing "
                f"{cfg.hard_label_smoothing:g}, {len(run.hard)} steps/epoch; " if run.hard is not None else "")
        log.info(f"validate: {run.describe_labels()}; student {cfg.model} ({run.num_classes} classes, tiny stem "
                 f"{run.tiny_stem}); {soft}{hard}{len(run.images)} images; world size {info.world_size}; "
                 f"device {device}")
    if progress.rng is not None:
        set_rng_state(progress.rng)  # last: building the model and the loaders drew from the global RNG
    epoch_stats: dict[str, Any] = {}
    last_soft: dict[str, Any] = {}
    mixed = len(set(run.kinds)) > 1
    for epoch in range(progress.epoch, cfg.train_epochs):
        lr = run.optimizer.param_groups[0]["lr"]
        kind = run.kinds[epoch]
        epoch_stats = train_epoch(kind, run, epoch)
        if kind == "soft":
            last_soft = epoch_stats
        run.scheduler.step()
        # every rank evaluates (its shard of) the very model rank 0 saves
        broadcast_buffers(run.model, info)
        if run.ema is not None:
            broadcast_buffers(run.ema.module, info)
        record = {"epoch": epoch + 1, "kind": kind, "lr": lr, **epoch_stats}
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
                                 dataclasses.asdict(run.plan) if run.plan is not None else None, checked.classes)
            if "val_top1" in record and record["val_top1"] >= progress.best_top1:
                checkpoints.save_best(run.evaluated, progress)
            msg = (f"epoch {epoch + 1}/{cfg.train_epochs}{f' ({kind})' if mixed else ''} lr {lr:.5f} "
                   f"loss {record['train_loss']:.4f} "
                   f"{record['images_per_s']:.0f} img/s")
            if "val_top1" in record:
                msg += f" | val top1 {record['val_top1']:.2f} top5 {record['val_top5']:.2f}"
            log.info(msg)
    return finish(run, progress, epoch_stats, last_soft)


def finish(run: Student, progress: Progress, epoch_stats: dict[str, Any],
           last_soft: dict[str, Any] | None = None) -> dict[str, Any]:
    """The final metrics (``final.json``, written by the main process). The label bytes are the
    soft store's (0 for a run without one); ``label_plan_segments`` the plan as trained."""
    cfg = run.cfg
    if progress.last_val is None:  # resumed a finished run without a stored evaluation
        progress.last_val = run.evaluate()
        progress.best_top1 = max(progress.best_top1, progress.last_val["top1"])
    last_val = progress.last_val
    last_soft = epoch_stats if last_soft is None else last_soft
    used = run.plan.used_batch_ids() if run.plan is not None else set()
    result = {
        "top1": last_val["top1"], "top5": last_val["top5"], "val_loss": last_val["loss"],
        "train_loss": epoch_stats.get("train_loss"),
        "best_top1": progress.best_top1, "dataset": cfg.dataset, "model": cfg.model, "epochs": cfg.train_epochs,
        "prune_ratio": cfg.prune_ratio, "compression": PRUNE_RATIOS.get(cfg.prune_ratio, ""),
        "prune_metric": cfg.prune_metric, "granularity": cfg.granularity,
        "label_batches_used": len(used),
        "label_bytes_store": run.store.nbytes() if run.store is not None else 0, "world_size": run.info.world_size,
        "images_per_s": epoch_stats.get("images_per_s"), "output_dir": cfg.output_dir,
        **label_bytes(cfg, run.store, run.plan, len(run.images), len(used)),
        "temp_scheduler": cfg.temp_scheduler, "temperature_last": last_soft.get("temperature"),
        "student_temperature_last": last_soft.get("student_temperature"), "prune_mode": cfg.prune_mode,
        "label_plan": cfg.label_plan, "label_plan_segments": [[k, n] for k, n in run.segments],
        "soft_epochs_trained": run.kinds.count("soft"), "hard_epochs_trained": run.kinds.count("hard"),
    }
    if run.info.is_main:
        atomic_json_dump(result, os.path.join(cfg.output_dir, FINAL))
    return result
