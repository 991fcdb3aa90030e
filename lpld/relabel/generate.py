"""FKD soft-label generation: the teacher's logits on every augmented batch a student will see.

Reproduces the authors' ``generate_soft_label_pruning.py``:

* image order: ``RandomSampler`` with a generator seeded by ``fkd_seed``, iterated epoch after
  epoch (:func:`lpld.augment.sampler_orders`: bit-identical to theirs, so their
  ``sampler_indices_epoch.json`` and ours agree);
* batches of ``batch_size``; ``drop_last = prune_ratio > 0``;
* ``total = int(epochs * batches_per_epoch * (1 - prune_ratio))`` batches, then stop ("less label").
  Their loop runs one epoch past ``epochs`` whenever ``total`` is a multiple of the epoch length
  (the stop test is only met once); those surplus labels are never used and are not generated here;
* per image a recorded RandomResizedCrop + flip (ImageNet-21K-P: + Cutout), per batch a recorded
  CutMix / MixUp, then the teacher's logits on the mixed batch (fp16 with ``use_fp16``).

Random draws come from per-batch generators seeded by ``(fkd_seed, batch id)`` (see
:mod:`lpld.augment`) instead of the authors' global RNG state inside their DataLoader workers: same
distributions, but the result does not depend on the worker count, and a resumed run is
byte-identical to an uninterrupted one. For the same reason :func:`repair_store` can regenerate
exactly the batches of a damaged store.

Before any work the images are fingerprinted and decoded once (a corrupt file is named up front),
the teacher's tensors hashed, and both hashes (with the teacher's class list) recorded in the
manifest; resuming a store made from other images or another teacher is an error.
"""
from __future__ import annotations

import argparse
import json
import math
import os
from typing import Any, Mapping

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from ..augment import normalize_mix_type, replay_batch, sample_batch_params, sampler_orders
from ..config import resolve
from ..data import ImageFolder, canonical_dataset, dataset_num_classes, load_rgb
from ..data.transforms import stored_normalization
from ..device_views import ImageBank, replay_batch_on_device
from ..labels import (StoreDamagedError, check_bound_inputs, image_list_fingerprint, open_label_store,
                      plan_batches, writer_for)
from ..labels.authors import META as AUTHORS_META
from ..labels.common import describe_ids, is_our_label_store
from ..labels.store import MANIFEST as OURS_MANIFEST
from ..labels.topk import parse_label_quantization, select_topk
from ..models.teacher import TeacherInfo, describe_module
from ..utils.classes import check_distilled_folders, check_same_classes
from ..utils.errors import InputValueError
from ..utils.fingerprint import scan_images
from ..utils.io import ensure_writable_dir
from ..utils.log import get_logger
from ..utils.progress import progress_bar
from ..utils.runtime import resolve_device, set_cudnn_benchmark
from ..utils.signals import quiet_broken_handoffs
from .schema import RELABEL_SCHEMA
from .shards import check_shardable, relabel_shard_plan
from .teacher import load_relabel_teacher, teacher_logits, teacher_summary

log = get_logger(__name__)


def normalize_config(cfg: Any) -> argparse.Namespace:
    """Accept a Namespace from ``parse_config`` or a plain dict; fill the derived defaults."""
    if isinstance(cfg, Mapping):
        cfg = resolve(RELABEL_SCHEMA, [("run_relabel(cfg)", dict(cfg))])
    else:
        cfg = argparse.Namespace(**{**{k: o.default for k, o in RELABEL_SCHEMA.items()}, **vars(cfg)})
    cfg.dataset = canonical_dataset(cfg.dataset)
    cfg.mix_type = normalize_mix_type(cfg.mix_type)
    if cfg.weights and cfg.teacher_ckpt and os.path.abspath(cfg.weights) != os.path.abspath(cfg.teacher_ckpt):
        raise InputValueError(f"--weights {cfg.weights} and --teacher-ckpt {cfg.teacher_ckpt} disagree; give one")
    cfg.teacher_ckpt = cfg.teacher_ckpt or cfg.weights
    if cfg.tiny_stem is None:
        cfg.tiny_stem = cfg.dataset == "tiny"
    if cfg.dataset == "in21k" and not cfg.model.startswith("timm/"):
        cfg.model = "timm/" + cfg.model  # authors: timm.create_model(args.model, num_classes=10450)
    if not cfg.train_dir:
        raise InputValueError("train_dir is required: the folder of distilled images (root/<class>/<image>)")
    cfg.output_dir = cfg.output_dir or cfg.fkd_path
    cfg.label_topk = resolve_label_topk(cfg)
    if not 0.0 < cfg.min_scale_crops <= cfg.max_scale_crops <= 1.0:
        raise InputValueError(f"need 0 < min_scale_crops <= max_scale_crops <= 1; got "
                         f"{cfg.min_scale_crops}, {cfg.max_scale_crops}")
    return cfg


def resolve_label_topk(cfg) -> int | None:
    """k from ``label_topk`` or the authors' ``label_quantization: MR-k`` (both given: they must agree);
    0 / None: all classes."""
    try:
        from_q = parse_label_quantization(getattr(cfg, "label_quantization", None))
    except ValueError as err:
        raise InputValueError(str(err)) from err
    k = cfg.label_topk or None
    if from_q is not None and k is not None and int(k) != from_q:
        raise InputValueError(f"label_topk {k} and label_quantization {cfg.label_quantization!r} disagree; give one")
    k = k if k is not None else from_q
    if k is not None and int(k) < 1:
        raise InputValueError(f"label_topk must be a positive number of classes (0 or unset: all); got {k}")
    if k is None and cfg.label_codec not in (None, "float16"):
        raise InputValueError(f"label_codec {cfg.label_codec} codes top-k values: set --label-topk as well")
    return None if k is None else int(k)


class AugmentedBatches(Dataset):
    """Item ``k`` = batch ``start + k``: its images, drawn and mixed as recorded, and its record.

    Runs in DataLoader workers; the images come from :func:`lpld.augment.replay_batch`, the same
    function the replay check and the student use."""

    def __init__(self, paths: list[str], orders: np.ndarray, manifest: dict[str, Any], start: int, stop: int,
                 sizes: list[tuple[int, int]] | None = None) -> None:
        self.paths, self.orders, self.m = paths, orders, manifest
        self.start, self.stop = start, stop
        self.sizes = sizes  # given: only draw the record; the trainer cuts the views on the device

    def __len__(self) -> int:
        return self.stop - self.start

    def batch_indices(self, gid: int) -> np.ndarray:
        epoch, index = divmod(gid, self.m["batches_per_epoch"])
        bs = self.m["batch_size"]
        return self.orders[epoch, index * bs:(index + 1) * bs]

    def __getitem__(self, k: int):
        gid = self.start + k
        indices = self.batch_indices(gid).tolist()
        images = {} if self.sizes is not None else {i: load_rgb(self.paths[i]) for i in indices}
        sizes = [self.sizes[i] if self.sizes is not None else images[i].size for i in indices]
        m = self.m
        record = sample_batch_params(gid, indices, sizes, seed=m["seed"],
                                     size=m["image_size"], scale=(m["min_scale_crops"], m["max_scale_crops"]),
                                     cutout=m["cutout"], mix_type=m["mix_type"], mixup_alpha=m["mixup_alpha"],
                                     cutmix_alpha=m["cutmix_alpha"])
        if self.sizes is not None:
            return None, record
        mean, std = m["normalize"]
        batch = replay_batch(images.__getitem__, record, m["image_size"], mean, std)
        return batch, record


def build_manifest(cfg: argparse.Namespace, dataset: ImageFolder, num_classes: int,
                   teacher: TeacherInfo | None = None, images_sha256: str | None = None) -> dict[str, Any]:
    per_epoch, planned, drop_last = plan_batches(len(dataset), cfg.batch_size, cfg.epochs, cfg.prune_ratio,
                                                 cfg.drop_last)
    mean, std = stored_normalization(cfg.dataset)
    rel = [os.path.relpath(p, dataset.root) for p, _ in dataset.samples]
    return {
        "dataset": cfg.dataset, "teacher": teacher_summary(cfg.model, cfg.teacher_ckpt, cfg.tiny_stem, num_classes),
        "seed": cfg.fkd_seed, "batch_size": cfg.batch_size, "epochs": cfg.epochs,
        "batches_per_epoch": per_epoch, "planned_batches": planned, "prune_ratio": cfg.prune_ratio,
        "drop_last": drop_last, "mix_type": cfg.mix_type, "mixup_alpha": cfg.mixup, "cutmix_alpha": cfg.cutmix,
        "num_classes": num_classes, "num_images": len(dataset), "image_size": cfg.input_size,
        "min_scale_crops": cfg.min_scale_crops, "max_scale_crops": cfg.max_scale_crops,
        "cutout": cfg.dataset == "in21k", "normalize": [mean, std],
        "logits_dtype": "float16" if cfg.use_fp16 else "float32", "amp": bool(cfg.amp),
        "image_list_sha1": image_list_fingerprint(rel), "num_classes_in_folder": len(dataset.classes),
        "images_sha256": images_sha256, "teacher_sha256": teacher.sha256 if teacher else None,
        "classes": teacher.classes if teacher else None,
        "label_topk": cfg.label_topk, "label_codec": cfg.label_codec if cfg.label_topk else None,
        "augmentation": cfg.augmentation,
        # for the drift message of regenerated augmentation (not plan keys: a resume may change them)
        "torch_version": torch.__version__, "numpy_version": np.__version__,
    }


def existing_manifest(path: str) -> dict | None:
    """The manifest of a store of ours already at ``path`` (either format), or None (a folder that
    merely holds a file of that name is someone else's: the writer refuses it)."""
    if not is_our_label_store(path):
        return None
    for name in (OURS_MANIFEST, AUTHORS_META):
        file = os.path.join(path, name)
        if os.path.isfile(file):
            try:
                with open(file) as f:
                    return json.load(f)
            except (OSError, ValueError):
                return None
    return None


def recovered_classes(train_dir: str) -> list[str] | None:
    """The class list recover recorded for a distilled folder (None: not ours, or not recorded)."""
    try:
        with open(os.path.join(train_dir, "recover.json")) as f:
            classes = json.load(f).get("classes")
    except (OSError, ValueError, AttributeError):
        return None
    return list(classes) if classes else None


def fingerprint_images(dataset: ImageFolder, workers: int = 0) -> str:
    """sha256 of the images of ``dataset``; every image is decoded once and bad files are named."""
    scan = scan_images([p for p, _ in dataset.samples], dataset.root, workers=max(1, workers) if workers else None)
    scan.raise_if_bad(dataset.root)
    return scan.sha256


def run_relabel(cfg: Any, teacher: nn.Module | None = None) -> str:
    """Generate (or resume) the soft-label store described by ``cfg``; returns its path.

    ``teacher`` replaces the checkpoint named in ``cfg`` (tests, benchmarks)."""
    cfg = normalize_config(cfg)
    dataset = ImageFolder(cfg.train_dir)
    if teacher is not None:
        num_classes = cfg.num_classes or default_num_classes(cfg.dataset, dataset, classes=cfg.classes)
        info = describe_module(teacher, num_classes)
        model = teacher
    else:
        model, info = load_relabel_teacher(cfg.model, cfg.teacher_ckpt, cfg.num_classes or
                                           default_num_classes(cfg.dataset, dataset, cfg.teacher_ckpt, cfg.classes),
                                           cfg.tiny_stem)
        num_classes = info.num_classes
    check_distilled_folders(dataset.classes, info.classes, num_classes, cfg.train_dir)
    if cfg.label_topk is not None and cfg.label_topk > num_classes:  # the class count is known only now
        raise InputValueError(f"label_topk {cfg.label_topk} is more than the teacher's {num_classes} classes; "
                              f"use --label-topk 1..{num_classes} (0 or unset: all classes)")
    check_same_classes(recovered_classes(cfg.train_dir), info.classes,
                       expected_what=f"the teacher that recovered {cfg.train_dir} (its recover.json)",
                       got_what=f"the teacher {cfg.teacher_ckpt}", fix="Relabel with a teacher of the same dataset.")
    manifest = build_manifest(cfg, dataset, num_classes, info, fingerprint_images(dataset, cfg.workers))
    first = 0  # global id of the store's row 0 (a batch-range shard holds a slice of the plan)
    if cfg.batch_shard:
        manifest, first, cfg.output_dir = relabel_shard_plan(manifest, cfg.batch_shard, cfg.output_dir)
    old = None if cfg.overwrite else existing_manifest(cfg.output_dir)
    if old is not None:
        check_bound_inputs(old, cfg.output_dir, images_sha256=manifest["images_sha256"], train_dir=cfg.train_dir,
                           teacher_sha256=info.sha256, teacher=cfg.teacher_ckpt or "(the given module)",
                           fix="Use another --output-dir, or --overwrite to regenerate the labels.")
    ensure_writable_dir(os.path.dirname(os.path.abspath(cfg.output_dir)), "parent of the label store")
    writer = writer_for(cfg.format, cfg.output_dir, manifest, resume=cfg.resume, overwrite=cfg.overwrite,
                        commit_every=cfg.commit_every, verify=cfg.verify)
    start, planned = writer.next_id, writer.planned
    stop = planned if cfg.stop_after <= 0 else min(planned, start + cfg.stop_after)
    epochs_needed = math.ceil((first + planned) / manifest["batches_per_epoch"])
    orders = sampler_orders(len(dataset), cfg.fkd_seed, epochs_needed)
    try:
        if start < stop:
            device = resolve_device(cfg.device)
            model = prepare_teacher(model, device, cfg.channels_last)
            set_cudnn_benchmark(device)  # every batch has the same shapes
            bank = ImageBank.from_folder(dataset, device, cfg.input_size) if cfg.input_path == "device" else None
            batches = AugmentedBatches([p for p, _ in dataset.samples], orders, writer.manifest, first + start, first + stop,
                                       sizes=bank.image_sizes() if bank is not None else None)
            loader = DataLoader(batches, batch_size=None, shuffle=False, num_workers=cfg.workers,
                                pin_memory=device.type == "cuda", persistent_workers=False,
                                prefetch_factor=4 if cfg.workers > 0 else None,
                                worker_init_fn=quiet_broken_handoffs)
            desc = f"relabel {os.path.basename(os.path.normpath(cfg.output_dir))}"
            try:
                with torch.no_grad():
                    for images, record in progress_bar(loader, desc=desc, total=len(batches), initial=0,
                                                       disable=not cfg.progress, unit="batch"):
                        if images is None:
                            images = replay_batch_on_device(bank, record, *writer.manifest["normalize"])
                        logits = teacher_logits(model, images, device, cfg.amp, cfg.channels_last)
                        store_labels(record, logits, writer.manifest)
                        record.batch_id -= first
                        writer.write(record)
            finally:
                writer.commit()  # every batch written so far is complete: keep it for the resumed run
    finally:
        if cfg.format == "authors":
            writer.close({e: orders[e] for e in range(orders.shape[0])})
        else:
            writer.close()
    store = open_label_store(cfg.output_dir)
    state = "complete" if store.num_batches >= planned else f"partial: {store.num_batches}/{planned} batches"
    log.info(f"[relabel] {cfg.output_dir}: {store.num_batches} batches of {cfg.batch_size} x {num_classes} "
          f"({state}), {store.nbytes():,} bytes on disk")
    return cfg.output_dir


def run_relabel_shard(cfg: Any, shard: tuple[int, int], teacher: nn.Module | None = None) -> str:
    """Shard ``shard = (index, count)`` of the relabel run ``cfg``: a contiguous range of its planned
    batches into its own store beside the output (:mod:`lpld.relabel.shards`, which merges them)."""
    check_shardable(cfg)
    index, count = shard
    return run_relabel(argparse.Namespace(**{**vars(cfg), "batch_shard": [index, count]}), teacher)


def store_labels(record, logits: torch.Tensor, manifest: dict[str, Any]) -> None:
    """Put the teacher's logits into ``record`` as the store keeps them: all classes in the store's
    dtype, or the top k ranked on the full-precision logits (values stay float32 until the writer
    casts or codes them, as theirs ranks before the fp16 cast: G 395-414)."""
    k = manifest.get("label_topk")
    if k is None:
        record.logits = logits.half() if manifest.get("logits_dtype") == "float16" else logits.float()
        _check_finite(record.logits, record.batch_id, manifest)
        return
    record.logits, record.topk_indices = select_topk(logits.float(), int(k), values_dtype=torch.float32)
    _check_finite(record.logits.half(), record.batch_id, manifest)  # the values are stored as fp16 or coded


def _check_finite(stored: torch.Tensor, batch_id: int, manifest: dict[str, Any]) -> None:
    """Soft labels that are inf or NaN (a diverged teacher, or logits beyond fp16's 65504) would
    train every student on NaN losses without a word: stop at the first such batch instead. The
    check reads the stored copy, so it costs one reduction per batch, not a device sync per step."""
    if not bool(torch.isfinite(stored).all()):
        raise InputValueError(
            f"teacher {manifest.get('teacher')} gives non-finite soft labels for batch {batch_id} "
            f"(largest |logit| {stored.float().abs().nan_to_num(float('inf')).max().item():.3g}, stored as "
            f"{stored.dtype}): the teacher has diverged or overflows fp16; check its validation loss, or "
            f"relabel without use_fp16")


def repair_store(store_path: str, train_dir: str, teacher_ckpt: str, *, model: str | None = None,
                 tiny_stem: bool | None = None, device: str = "cpu", progress: bool = True) -> list[int]:
    """Regenerate exactly the damaged batches of a store (either format) in place; returns their ids.

    The images and the teacher must be those the store records (content hashes), so each
    regenerated batch is the one that was lost (byte-identical on the device type it was made on)."""
    manifest = existing_manifest(store_path)
    if manifest is None:
        raise StoreDamagedError(f"{store_path}: no manifest.json / {AUTHORS_META}; its settings are unknown, so "
                                f"damaged batches cannot be regenerated. Regenerate the store with relabel.")
    if not manifest.get("images_sha256") or not manifest.get("teacher_sha256"):
        raise StoreDamagedError(f"{store_path} records no content hashes of its images and teacher (an older "
                                f"lpld): a repair could not be checked. Regenerate it with relabel --overwrite.")
    dataset = ImageFolder(train_dir)
    info_m = manifest.get("teacher") or {}
    arch = model or info_m.get("arch")
    stem = tiny_stem if tiny_stem is not None else bool(info_m.get("tiny_stem", False))
    teacher, info = load_relabel_teacher(arch, teacher_ckpt, int(manifest["num_classes"]), stem)
    check_bound_inputs(manifest, store_path, images_sha256=fingerprint_images(dataset), train_dir=train_dir,
                       teacher_sha256=info.sha256, teacher=teacher_ckpt,
                       fix="A repair needs the exact images and teacher the store was made from.")
    fmt = "authors" if os.path.isfile(os.path.join(store_path, AUTHORS_META)) else "ours"
    writer = writer_for(fmt, store_path, None, repair=True)
    damaged = list(writer.damaged)
    planned = int(manifest["planned_batches"])
    orders = sampler_orders(len(dataset), int(manifest["seed"]), math.ceil(planned / manifest["batches_per_epoch"]))
    try:
        if damaged:
            dev = resolve_device(device)
            teacher = prepare_teacher(teacher, dev)
            batches = AugmentedBatches([p for p, _ in dataset.samples], orders, writer.manifest, 0, planned)
            with torch.no_grad():
                for gid in progress_bar(damaged, desc="repair", disable=not progress, unit="batch"):
                    images, record = batches[gid]
                    logits = teacher_logits(teacher, images, dev, bool(manifest.get("amp", False)))
                    store_labels(record, logits, writer.manifest)
                    writer.rewrite(record)
    finally:
        if fmt == "authors":
            writer.next_id = writer._count_done()
            writer.close({e: orders[e].tolist() for e in range(orders.shape[0])})
        else:
            writer.close()
    if damaged:
        log.info(f"[repair] {store_path}: regenerated batches {describe_ids(damaged)}")
    else:
        log.info(f"[repair] {store_path}: no damaged batch")
    return damaged


def default_num_classes(dataset_name: str, dataset: ImageFolder, checkpoint: str | None = None,
                        classes: str | None = None) -> int | None:
    """The authors' class_dict (1000 / 10450 / 200) or the size of the class subset ``classes``;
    otherwise the teacher's (when a checkpoint is given) or the folder's class count."""
    known = dataset_num_classes(dataset_name, classes)
    if known:
        return known
    return None if checkpoint else len(dataset.classes)


def prepare_teacher(model: nn.Module, device: torch.device, channels_last: bool = True) -> nn.Module:
    model = model.to(device).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    if channels_last and device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    return model
