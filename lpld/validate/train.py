"""Student training on distilled images + (pruned) stored soft labels, and evaluation.

Reproduces the authors' ``train_FKD_label_pruning_batch.py``: per training epoch the pruning plan
picks stored batches; each batch's images are replayed with the recorded crop/flip/mix; the student
minimises KL(teacher || student) at temperature T; the LR schedule steps once per epoch; the real
validation set is evaluated after epoch 1, every ``val_interval`` epochs and after the last.
One checkpoint per epoch (``checkpoint.pth``: model, optimizer, scheduler, EMA, every rank's RNG
state) makes ``--resume`` continue exactly where it stopped: the batches of an epoch depend only
on ``(seed, epoch)``, and dropout continues its random stream.
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
import torchvision.transforms as T
from timm.utils import accuracy
from torch.utils.data import DataLoader, Subset

from ..augment import normalize_mix_type
from ..config import ConfigError, resolve
from ..data import DATASET_NUM_CLASSES, ImageFolder, TinyImageNet, canonical_dataset, normalization, val_transform
from ..device_views import ImageBank
from ..engine import evaluate, hits
from ..models import apply_tiny_stem, build_model, save_checkpoint
from ..utils import preflight
from ..utils.io import atomic_json_dump, ensure_writable_dir
from ..utils.metrics import DeviceSums, MetricsLog
from ..utils.progress import progress_bar
from ..utils.runtime import (autocast, keep_logits_fp32, on_for_cuda, rng_state, seed_everything,
                             set_cudnn_benchmark, set_rng_state, to_channels_last)
from ..utils.safe_load import RESUME_FIX, safe_torch_load
from .distributed import (DistInfo, all_reduce_, barrier, broadcast_buffers, gather_objects, init_distributed,
                          shard_indices)
from .loader import BatchInputs, PlannedBatchSampler, SoftLabelBatches, build_train_loader
from .loss import distillation_loss, probability_target, resolve_loss_variant
from .optim import ModelEma, build_optimizer, build_scheduler
from .pruning import SCORE_METRICS, PruningPlan
from .schema import PRUNE_RATIOS, VALIDATE_SCHEMA
from .temperature import StudentTemperature, TemperatureSchedule

CHECKPOINT = "checkpoint.pth"
BEST = "model_best.pth"
FINAL = "final.json"
# Settings a resumed run must share with the checkpoint it continues.
RESUME_KEYS = ("dataset", "model", "num_classes", "batch_size", "epochs", "train_epochs", "prune_ratio",
               "prune_metric", "granularity", "replacement", "remap_last_batch", "seed", "sgd",
               "temperature", "label_dir", "train_dir", "gradient_accumulation_steps",
               "temp_scheduler", "temp_step_size", "temp_step_gamma", "temp_min", "temp_stu", "temp_stu_dynamic",
               "prune_mode")
# Resume keys added later, with the value a checkpoint that lacks them was trained with.
RESUME_DEFAULTS = {"temp_scheduler": "none", "temp_step_size": 30, "temp_step_gamma": 0.7, "temp_min": 2.0,
                   "temp_stu": 0.0, "temp_stu_dynamic": 0.0, "prune_mode": "lpld"}


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


# --- data ---------------------------------------------------------------------------------------
def student_val_transform(dataset: str, size: int):
    """Authors' ``load_dataset``: ImageNet-1K Resize(256) + CenterCrop(224); Tiny-ImageNet
    ToTensor + normalise (64 px as stored); ImageNet-21K-P Resize((224, 224)), no normalisation."""
    if dataset == "in21k":
        return T.Compose([T.Resize((size, size)), T.ToTensor()])
    return val_transform(size, dataset)


def build_val_dataset(dataset: str, val_dir: str, transform):
    """``val_dir`` as in the authors' configs: the split folder itself. Tiny-ImageNet's val/ (with
    ``val_annotations.txt``) or its root (with ``wnids.txt``) is read in the original layout;
    anything with class sub-folders as an ImageFolder."""
    if not os.path.isdir(val_dir):
        raise FileNotFoundError(f"val_dir {val_dir} is not a directory")
    if os.path.isfile(os.path.join(val_dir, "val_annotations.txt")):
        return TinyImageNet(os.path.dirname(os.path.abspath(val_dir)), "val", transform)
    if os.path.isfile(os.path.join(val_dir, "wnids.txt")):
        return TinyImageNet(val_dir, "val", transform)
    if dataset == "demo" and os.path.isdir(os.path.join(val_dir, "val")):
        val_dir = os.path.join(val_dir, "val")
    return ImageFolder(val_dir, transform)


def open_store_checked(cfg, dataset: str, num_images: int):
    from ..labels import open_label_store
    from ..labels.common import StoreMismatchError, check_compatible
    num_classes = cfg.num_classes or DATASET_NUM_CLASSES.get(dataset)
    # the label folder may be read-only; a regenerated store draws its crops for these images
    store = open_label_store(cfg.label_dir, index_dir=cfg.output_dir, num_classes=num_classes,
                             train_dir=cfg.train_dir)
    per_epoch = num_images // cfg.batch_size  # the authors' trainer: len(images) // batch_size
    if _records_no_epoch_size(cfg.label_dir) and 0 < store.batches_per_epoch < per_epoch:
        # A pruned ("less label") folder of theirs holds only part of its first epoch, so the files
        # cannot tell the epoch size: take it from the images, as their trainer does.
        store = open_label_store(cfg.label_dir, batches_per_epoch=per_epoch, index_dir=cfg.output_dir,
                                 num_classes=num_classes, train_dir=cfg.train_dir)
    man = store.manifest
    num_classes = num_classes or store.num_classes
    if getattr(store, "regenerated", False) and store.num_batches:
        # drift (another torch version or device) changes every batch: report it here, in one line,
        # rather than from inside a DataLoader worker
        store.read(0)
    if cfg.label_quantization is not None:
        from ..labels.topk import parse_label_quantization
        want = parse_label_quantization(cfg.label_quantization)
        if want != man.get("label_topk"):
            have = man.get("label_topk")
            raise StoreMismatchError(f"label_quantization {cfg.label_quantization!r} asks for "
                                     f"{'top-%d' % want if want else 'full'} labels, but {cfg.label_dir} holds "
                                     f"{'top-%d' % have if have else 'full'} labels; relabel with --label-topk "
                                     f"{want or 0} or drop label_quantization")
    check_compatible(store, num_images=num_images, num_classes=num_classes, batch_size=cfg.batch_size,
                     where=f"train_dir {cfg.train_dir}")
    if cfg.mix_type is not None and "mix_type" in man:
        want, have = normalize_mix_type(cfg.mix_type), normalize_mix_type(man["mix_type"])
        if want != have:
            raise StoreMismatchError(f"soft-label store {cfg.label_dir} was generated with mix_type "
                                     f"{have!r}, but mix_type {want!r} is requested; the mix is replayed "
                                     f"from the store, so set --mix-type {have} (or leave it unset)")
    from ..data import DATASET_IMAGE_SIZE
    size = cfg.image_size or man.get("image_size") or DATASET_IMAGE_SIZE.get(dataset)
    if size is None:
        raise StoreMismatchError(f"soft-label store {cfg.label_dir} does not record image_size and dataset "
                                 f"{dataset!r} has no preset size; pass --image-size")
    if cfg.image_size and man.get("image_size") and int(man["image_size"]) != cfg.image_size:
        raise StoreMismatchError(f"soft-label store {cfg.label_dir} holds {man['image_size']} px crops, "
                                 f"but image_size {cfg.image_size} is requested")
    return store, num_classes, int(size)


def _records_no_epoch_size(label_dir: str) -> bool:
    """An authors' or LPQLD folder without our side manifest (ours record batches_per_epoch)."""
    from ..labels.authors import META
    return not any(os.path.isfile(os.path.join(label_dir, name)) for name in ("manifest.json", META))


def make_plan(cfg, store) -> PruningPlan:
    scores = None
    if cfg.prune_metric in SCORE_METRICS:  # the pool is chosen by a label-selection score
        from .selection import plan_scores
        scores = plan_scores(cfg, store)
    plan = PruningPlan(batches_per_epoch=store.batches_per_epoch, train_epochs=cfg.train_epochs,
                       prune_ratio=cfg.prune_ratio, metric=cfg.prune_metric, granularity=cfg.granularity,
                       replacement=cfg.replacement, remap_last_batch=cfg.remap_last_batch, seed=cfg.seed,
                       scores=scores, keep=cfg.prune_keep, mode=cfg.prune_mode,
                       stored_batches=store.num_batches if cfg.prune_mode == "lpqld" else None)
    if plan.required_batches > store.num_batches:
        from ..labels.common import StoreMismatchError
        man = store.manifest
        raise StoreMismatchError(
            f"{plan.describe()}: training needs stored batches 0..{plan.required_batches - 1}, but "
            f"{cfg.label_dir} holds {store.num_batches} (generated with prune_ratio "
            f"{man.get('prune_ratio')}, epochs {man.get('epochs')}). Use a prune ratio of at least "
            f"the store's, fewer --train-epochs, or regenerate the labels.")
    return plan


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


def label_bytes(cfg, store, plan: PruningPlan, num_images: int, batches_used: int) -> dict[str, Any]:
    """What the labels cost: ``label_bytes_actual`` (every file of the store on disk, manifests
    included), ``label_bytes_full`` (the full fp16 store of the same relabel run: prune 0, all
    classes, recorded augmentation; from the array specs), ``compression_actual`` (their ratio),
    ``compression_nominal`` (1 / (1 - prune_ratio) times full / stored bytes of one view's labels:
    the figure a method's name claims), the pool against one epoch's batches, and
    ``label_bytes_used`` (label bytes of the batches a run can touch)."""
    from ..labels.store import full_store_bytes, label_row_bytes
    man = store.manifest
    row = label_row_bytes(man)
    full_row = int(man["num_classes"]) * 2
    actual = store.nbytes()
    try:
        full = full_store_bytes({**man, "epochs": man.get("epochs") or cfg.epochs}, num_images=num_images)
    except (KeyError, ValueError, TypeError):
        full = None
    return {
        "label_topk": man.get("label_topk"), "label_codec": man.get("label_codec"),
        "augmentation": man.get("augmentation", "recorded"),
        "label_bytes_used": batches_used * store.batch_size * row,
        "label_bytes_actual": actual, "label_bytes_full": full,
        "compression_nominal": round(full_row / row / (1 - cfg.prune_ratio), 6),
        "compression_actual": None if full is None else round(full / actual, 3),
        "pool_batches": plan.pool_batches, "batches_per_epoch": store.batches_per_epoch,
        "small_pool": plan.pool_batches < store.batches_per_epoch,
    }


def _unwrap(model):
    """The student itself, under DDP and/or torch.compile wrappers."""
    while hasattr(model, "module") or hasattr(model, "_orig_mod"):
        model = getattr(model, "_orig_mod", None) or model.module
    return model


def _resume_state(cfg) -> dict[str, Any]:
    return {k: getattr(cfg, k) for k in RESUME_KEYS}


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


def _run(cfg, info: DistInfo, device: torch.device) -> dict[str, Any]:
    dataset = canonical_dataset(cfg.dataset)
    ensure_writable_dir(cfg.output_dir, "student output directory", owner="validate")
    checked = preflight.validate(cfg, dataset)  # lock, labels bound to these images, class lists
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
    start_epoch, best_top1, last_val = 0, 0.0, None
    ckpt_path = os.path.join(cfg.output_dir, CHECKPOINT)
    rng = None
    if cfg.resume and os.path.isfile(ckpt_path):
        state = safe_torch_load(ckpt_path, what="--resume: checkpoint", fix=RESUME_FIX)
        saved = state.get("resume_state", {})
        diff = {k: (saved.get(k, RESUME_DEFAULTS.get(k)), v) for k, v in _resume_state(cfg).items()
                if saved.get(k, RESUME_DEFAULTS.get(k)) != v}
        if diff:
            raise ConfigError(f"--resume: {ckpt_path} was written with other settings "
                              f"(option: checkpoint value, current value) {diff}; use another --output-dir")
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        start_epoch, best_top1, last_val = int(state["epoch"]), float(state["best_top1"]), state.get("last_val")
        if state.get("lr_scheduler"):
            scheduler.load_state_dict(state["lr_scheduler"])
        else:  # a checkpoint from before the scheduler was saved: replay its epochs
            for _ in range(start_epoch):
                scheduler.step()
        if ema is not None and state.get("ema"):
            ema.restore(state["ema"])
        if state.get("student_temperature"):  # the calibrated value the next epoch uses
            student.load_state_dict(state["student_temperature"])
        rngs = state.get("rng") or []
        rng = rngs[info.rank] if info.rank < len(rngs) else (rngs[0] if rngs else None)
    elif cfg.resume and info.is_main:
        print(f"--resume: no {ckpt_path} yet; starting from scratch")

    train_model = model
    if info.enabled:
        train_model = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)
    if cfg.compile:
        train_model = torch.compile(train_model, backend=cfg.compile_backend)

    bank = None
    if cfg.input_path == "device":
        bank = ImageBank.from_folder(images, device, size)
    train_ds = SoftLabelBatches(images, store, size, mean, std, cache_images=cfg.cache_images,
                                views_on_device=bank is not None)
    sampler = PlannedBatchSampler(plan, info.rank, info.world_size, cfg.max_steps_per_epoch)
    pin = device.type == "cuda"
    loader = build_train_loader(train_ds, sampler, workers=cfg.workers, pin_memory=pin,
                                fetcher=cfg.fetcher, prefetch_factor=cfg.prefetch_factor, seed=cfg.seed)
    inputs = BatchInputs(device, mean, std, channels_last=channels_last, bank=bank, num_classes=num_classes)
    val_ds = build_val_dataset(dataset, cfg.val_dir, student_val_transform(dataset, size))
    if info.enabled:
        val_ds = Subset(val_ds, shard_indices(len(val_ds), info))
    val_bs = cfg.batch_size // 4 if cfg.batch_size > 64 else 64  # authors' val batch size
    val_workers = min(cfg.workers, 8)
    val_loader = DataLoader(val_ds, batch_size=val_bs, shuffle=False, num_workers=val_workers, pin_memory=pin,
                            persistent_workers=val_workers > 0, generator=torch.Generator().manual_seed(cfg.seed))

    def validate_now() -> dict:
        return evaluate(ema.module if ema is not None else model, val_loader, device, amp=cfg.amp,
                        channels_last=channels_last, progress=cfg.progress and info.is_main)

    log = MetricsLog(os.path.join(cfg.output_dir, "metrics")) if info.is_main else None
    if info.is_main:
        print(f"validate: {plan.describe()}; student {cfg.model} ({num_classes} classes, tiny stem "
              f"{tiny_stem}); loss {variant}, {schedule.describe()}, student T {student.mode}"
              f"{'' if student.mode == 'teacher' else ' ' + format(student.value, 'g')}; {len(images)} images, "
              f"{store.batches_per_epoch} batches/epoch; world size {info.world_size}; device {device}")
    if rng is not None:
        set_rng_state(rng)  # last: building the model and the loaders drew from the global RNG
    epoch_stats: dict[str, Any] = {}
    for epoch in range(start_epoch, cfg.train_epochs):
        lr = optimizer.param_groups[0]["lr"]
        sampler.set_epoch(epoch)
        epoch_stats = train_one_epoch(train_model, ema, optimizer, loader, device, cfg, variant, epoch, info, inputs,
                                      temperature=schedule.at(epoch), student=student)
        scheduler.step()
        # every rank evaluates (its shard of) the very model rank 0 saves
        broadcast_buffers(model, info)
        if ema is not None:
            broadcast_buffers(ema.module, info)
        record = {"epoch": epoch + 1, "lr": lr, **epoch_stats}
        last = epoch == cfg.train_epochs - 1
        if epoch % cfg.val_interval == 0 or last:
            last_val = validate_now()
            record.update({"val_top1": last_val["top1"], "val_top5": last_val["top5"],
                           "val_loss": last_val["loss"]})
            best_top1 = max(best_top1, last_val["top1"])
        save = (epoch + 1) % cfg.checkpoint_interval == 0 or last
        rngs = gather_objects(rng_state(), info) if save else None
        if info.is_main:
            log.append(record)
            extra = dict(optimizer=optimizer.state_dict(), lr_scheduler=scheduler.state_dict(), epoch=epoch + 1,
                         best_top1=best_top1, last_val=last_val, rng=rngs,
                         ema=ema.checkpoint() if ema is not None else None,
                         plan=dataclasses.asdict(plan), resume_state=_resume_state(cfg), classes=checked.classes,
                         student_temperature=student.state_dict())
            if save:
                save_checkpoint(ckpt_path, model, **extra)
            if last_val is not None and "val_top1" in record and record["val_top1"] >= best_top1:
                save_checkpoint(os.path.join(cfg.output_dir, BEST),
                                ema.module if ema is not None else model, epoch=epoch + 1, top1=best_top1)
            msg = (f"epoch {epoch + 1}/{cfg.train_epochs} lr {lr:.5f} loss {record['train_loss']:.4f} "
                   f"{record['images_per_s']:.0f} img/s")
            if "val_top1" in record:
                msg += f" | val top1 {record['val_top1']:.2f} top5 {record['val_top5']:.2f}"
            print(msg, flush=True)

    if last_val is None:  # resumed a finished run without a stored evaluation
        last_val = validate_now()
        best_top1 = max(best_top1, last_val["top1"])
    used = plan.used_batch_ids()
    result = {
        "top1": last_val["top1"], "top5": last_val["top5"], "val_loss": last_val["loss"],
        "train_loss": epoch_stats.get("train_loss"),
        "best_top1": best_top1, "dataset": cfg.dataset, "model": cfg.model, "epochs": cfg.train_epochs,
        "prune_ratio": cfg.prune_ratio, "compression": PRUNE_RATIOS.get(cfg.prune_ratio, ""),
        "prune_metric": cfg.prune_metric, "granularity": cfg.granularity,
        "label_batches_used": len(used),
        "label_bytes_store": store.nbytes(), "world_size": info.world_size,
        "images_per_s": epoch_stats.get("images_per_s"), "output_dir": cfg.output_dir,
        **label_bytes(cfg, store, plan, len(images), len(used)),
        "temp_scheduler": cfg.temp_scheduler, "temperature_last": epoch_stats.get("temperature"),
        "student_temperature_last": epoch_stats.get("student_temperature"), "prune_mode": cfg.prune_mode,
    }
    if info.is_main:
        atomic_json_dump(result, os.path.join(cfg.output_dir, FINAL))
    return result
