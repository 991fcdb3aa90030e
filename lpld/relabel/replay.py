"""Replay check: rebuild stored batches from the images, rerun the teacher, compare the logits.

A difference of the order of fp16 rounding proves that the images, their order and the recorded
augmentation still belong to the labels; a wrong image folder, a re-ordered folder or a different
teacher shows up as a difference of the order of the logits themselves.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Sequence

import torch
from torch import nn

from ..augment import replay_batch
from ..data import ImageFolder, canonical_dataset, load_rgb, stored_normalization
from ..labels import check_bound_inputs, check_compatible, image_list_fingerprint, open_label_store
from ..labels.common import StoreMismatchError
from ..labels.regen import AugmentationDriftError
from ..models.teacher import describe_module
from ..utils.errors import InputValueError
from ..utils.runtime import resolve_device
from .generate import fingerprint_images, prepare_teacher
from .teacher import load_relabel_teacher, teacher_logits


@dataclass
class ReplayReport:
    max_abs_diff: float  # max |teacher(replayed batch) - stored logits|
    max_abs_logit: float  # max |stored logit|, the scale of the difference
    batches: list[int]
    max_abs_diff_stored_dtype: float = 0.0  # same, teacher output first rounded to the stored dtype
    codec_step: float = 0.0  # 8-bit top-k values: the largest half code step (their rounding)
    topk_misses: int = 0  # rows whose stored classes are not the teacher's top k (beyond the tolerance)

    @property
    def fp16_tolerance(self) -> float:
        """Half an fp16 ulp at the largest logit (the rounding of storing fp16), with a 4x margin for
        cross-device arithmetic; plus half a code step for 8-bit values."""
        return 4 * max(self.max_abs_logit, 1.0) * 2.0 ** -11 + self.codec_step


def default_batches(num_batches: int, count: int = 4) -> list[int]:
    """First, last and evenly spread batch ids."""
    if count <= 1:
        return [0] if num_batches else []
    if num_batches <= count:
        return list(range(num_batches))
    return sorted({round(k * (num_batches - 1) / (count - 1)) for k in range(count)})


def replay_check(store_path: str, train_dir: str, teacher: nn.Module | None = None, *,
                 model: str | None = None, teacher_ckpt: str | None = None, tiny_stem: bool | None = None,
                 num_classes: int | None = None, dataset: str | None = None, input_size: int | None = None,
                 batches: int | Sequence[int] | None = None, device: str = "auto", amp: bool | None = None,
                 report: bool = False, check_inputs: bool = True) -> float | ReplayReport:
    """Max absolute difference between the stored logits and the teacher's logits on the replayed
    batches. ``batches``: ids, or a count spread over the store (default 4). The teacher comes from
    ``teacher`` or is rebuilt from the manifest / the keyword overrides. ``report=True`` returns a
    :class:`ReplayReport`. ``check_inputs``: first compare the content hashes of the images and the
    teacher with those the store records (a mismatch is a :class:`StoreMismatchError`)."""
    store = open_label_store(store_path, num_classes=num_classes, train_dir=train_dir)
    m = store.manifest
    images = ImageFolder(train_dir)
    check_compatible(store, num_images=len(images), num_classes=num_classes, where=f"images in {train_dir}")
    if m.get("image_list_sha1"):
        rel = [os.path.relpath(p, images.root) for p, _ in images.samples]
        if image_list_fingerprint(rel) != m["image_list_sha1"]:
            raise StoreMismatchError(f"{train_dir} holds other image files (or in another order) than the "
                                     f"folder the labels in {store_path} were generated from")
    dataset = canonical_dataset(dataset or m.get("dataset") or "") or None
    size = input_size or m.get("image_size")
    if dataset is None or size is None:
        raise InputValueError(f"{store_path} does not record its dataset / input size: pass dataset= and "
                              f"input_size=")
    mean, std = m["normalize"] if m.get("normalize") else stored_normalization(dataset)
    if teacher is None:
        info = m.get("teacher") or {}
        arch = model or info.get("arch")
        if arch is None:
            raise InputValueError(f"{store_path} does not record its teacher: pass model= and teacher_ckpt=")
        stem = tiny_stem if tiny_stem is not None else info.get("tiny_stem", dataset == "tiny")
        teacher, teacher_info = load_relabel_teacher(arch, teacher_ckpt, num_classes or store.num_classes, stem)
    else:
        teacher_info = describe_module(teacher, num_classes or store.num_classes)
    if check_inputs:
        check_bound_inputs(m, store_path, images_sha256=fingerprint_images(images), train_dir=train_dir,
                           teacher_sha256=teacher_info.sha256, teacher=teacher_ckpt or "(the given module)",
                           fix="These are not the inputs the labels were made from.")
    dev = resolve_device(device)
    teacher = prepare_teacher(teacher, dev)
    use_amp = bool(m.get("amp", False)) if amp is None else amp
    if batches is None or isinstance(batches, int):
        ids = default_batches(store.num_batches, batches or 4)
    else:
        ids = [int(b) for b in batches]
    paths = [p for p, _ in images.samples]
    worst, worst_rounded, scale, step, misses = 0.0, 0.0, 0.0, 0.0, 0
    uint8 = m.get("label_codec") == "uint8"
    for gid in ids:
        record = store.read(gid)
        x = replay_batch(lambda i: load_rgb(paths[i]), record, size, mean, std)
        out = teacher_logits(teacher, x, dev, use_amp).float()
        stored = record.logits.float()
        if record.topk_indices is not None:  # the teacher's logits at the stored classes
            full = out
            out = full.gather(1, record.topk_indices.long())
            if uint8:
                step = max(step, float((stored.amax(1) - stored.amin(1)).max()) / 255 / 2)
            misses += topk_misses(full, stored, record.topk_indices, 4 * max(float(stored.abs().max()), 1.0)
                                  * 2.0 ** -11 + step)
        worst = max(worst, (out - stored).abs().max().item())
        rounded = out.to(torch.float16 if m.get("logits_dtype") == "float16" else torch.float32).float()
        worst_rounded = max(worst_rounded, (rounded - stored).abs().max().item())
        scale = max(scale, stored.abs().max().item())
    result = ReplayReport(worst, scale, ids, worst_rounded, step, misses)
    return result if report else result.max_abs_diff


def topk_misses(teacher: torch.Tensor, values: torch.Tensor, indices: torch.Tensor, tolerance: float) -> int:
    """Rows where a class outside the stored ones beats the smallest stored value by more than
    ``tolerance``: the stored classes are not the teacher's top k (ties and rounding aside)."""
    outside = teacher.scatter(1, indices.long(), float("-inf"))
    return int((outside.amax(1) > values.amin(1) + tolerance).sum()) if outside.shape[1] > indices.shape[1] else 0


def digest_failures(store) -> list[int]:
    """Ids of the batches of a store with regenerated augmentation whose digest differs from the
    augmentation drawn again now (the store must have its images attached)."""
    bad = []
    for gid in range(store.num_batches):
        try:
            store.read(gid)
        except AugmentationDriftError:
            bad.append(gid)
    return bad
