"""What both soft-label formats share: the manifest keys, errors, and compatibility checks.

A store is bound to its inputs by content: the manifest records ``images_sha256`` (the distilled
images, :func:`lpld.utils.fingerprint.scan_images`), ``teacher_sha256`` (the teacher's tensors) and
``classes`` (the teacher's class list, when its checkpoint records one). Every consumer compares
them with what it is given (:func:`check_bound_inputs`). Stores written before these keys existed,
and the authors' releases, carry none: they load with one warning.
"""
from __future__ import annotations

import hashlib
import json
import os
from typing import Any, Sequence

from ..utils.errors import InputValueError, LpldInputError, StoreDamagedError  # noqa: F401
from ..utils.fingerprint import check_same
from ..utils.log import get_logger
from ..utils.owner import FILLING, ForeignFolderError, entries

log = get_logger(__name__)

FORMAT_NAME = "lpld-soft-labels"
# 2: per-batch checksums and content hashes of the images and the teacher (version 1 stores load)
FORMAT_VERSION = 2

# Keys a resumed generation must agree on with the store it continues (everything that changes
# the bytes written).
PLAN_KEYS = ("dataset", "teacher", "seed", "batch_size", "epochs", "batches_per_epoch",
             "planned_batches", "prune_ratio", "mix_type", "num_classes", "num_images", "image_size",
             "cutout", "drop_last", "logits_dtype", "min_scale_crops", "max_scale_crops",
             "mixup_alpha", "cutmix_alpha", "normalize", "image_list_sha1", "amp",
             "label_topk", "label_codec", "augmentation")
# Values of plan keys added after stores were first written: an older store without the key holds
# full fp16/fp32 logits with recorded augmentation.
PLAN_DEFAULTS = {"label_topk": None, "label_codec": None, "augmentation": "recorded"}
AUGMENTATION_MODES = ("recorded", "regenerated")
LABEL_CODECS = ("float16", "uint8")
# Keys that bind a store to the content of its inputs (absent from older stores and the authors').
BINDING_KEYS = ("images_sha256", "teacher_sha256")


# Counts a manifest records: each a positive integer. Our stores must have the first four (their
# array shapes come from them); ``epochs`` / ``num_images`` / ``image_size`` are null in stores
# converted from the authors' release, and a side manifest (lpld_manifest.json beside the authors'
# or LPQLD files) is checked for the counts it has.
MANIFEST_COUNTS = ("batch_size", "batches_per_epoch", "planned_batches", "num_classes")
OPTIONAL_COUNTS = ("epochs", "num_images", "image_size", "label_topk")


def check_manifest_counts(manifest: Any, path: str, required: Sequence[str] = MANIFEST_COUNTS) -> None:
    """A manifest whose counts are absent, zero, negative or not integers is damaged: one line naming
    the file, the key and the value (``batches_per_epoch: 0`` would otherwise divide by zero
    later, or be taken for "unknown" and silently replaced)."""
    if not isinstance(manifest, dict):
        raise StoreDamagedError(f"{path}: holds a {type(manifest).__name__}, not a manifest object; the file is "
                                f"damaged. Regenerate the labels or download them again.")
    for key in (*MANIFEST_COUNTS, *OPTIONAL_COUNTS):
        value = manifest.get(key)
        if value is None:
            if key in required:
                raise StoreDamagedError(f"{path}: has no '{key}'; the manifest is damaged. Regenerate the labels "
                                        f"or download them again.")
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise StoreDamagedError(f"{path}: '{key}' is {value!r}, but it must be a positive integer; the manifest "
                                    f"is damaged. Regenerate the labels or download them again.")


def plan_value(manifest: dict, key: str):
    """``manifest[key]``, or the value an older store without the key implies."""
    return manifest.get(key, PLAN_DEFAULTS.get(key))


def plan_diffs(old: dict, new: dict, keys: Sequence[str] = PLAN_KEYS) -> dict[str, tuple]:
    """Plan keys on which two manifests disagree: key -> (old value, new value)."""
    return {k: (plan_value(old, k), plan_value(new, k)) for k in keys if plan_value(old, k) != plan_value(new, k)}


def is_our_label_store(path: str) -> bool:
    """``path`` holds soft labels that lpld wrote: our manifest (``manifest.json``, or
    ``lpld_manifest.json`` beside the authors' / LPQLD layout) of format ``lpld-soft-labels``, or
    the fill marker of a store being created. Only such a folder may be replaced (``--overwrite``,
    the pipeline's ``--recompute``): the authors' downloaded labels, or a folder that merely holds
    a file called ``manifest.json``, are someone else's."""
    if os.path.isfile(os.path.join(path, FILLING)):
        return True
    for name in ("manifest.json", "lpld_manifest.json"):
        try:
            with open(os.path.join(path, name)) as f:
                fmt = json.load(f).get("format")
        except (OSError, ValueError, AttributeError):
            continue
        if isinstance(fmt, str) and fmt.split("/")[0] == FORMAT_NAME:
            return True
    return False


class StoreMismatchError(LpldInputError, ValueError):
    """A label store and the images / settings it is used with disagree."""


def repair_command(path: str) -> str:
    """The command that regenerates exactly the damaged batches of the store at ``path``."""
    return f"lpld check-labels --store {path} --train-dir <images> --teacher-ckpt <teacher> --repair"


def repair_hint(path: str) -> str:
    return (f"Regenerate exactly the damaged batches with: {repair_command(path)} (or regenerate the store with "
            f"relabel --overwrite)")


def continued_manifest(path: str, manifest: dict, meta: str, *, resume: bool, overwrite: bool) -> dict | None:
    """What a store writer does with the folder ``path`` before it writes: the one resume /
    overwrite policy of every format. ``meta``: the file the format keeps its manifest in.

    * a folder that holds anything but lpld's soft labels is never written into nor replaced,
      whatever ``overwrite`` says (:class:`~lpld.utils.owner.ForeignFolderError`);
    * new, empty, being filled, or ours with ``overwrite``: None, the writer starts a new store
      (replacing the old content);
    * a store of ours with the same plan and inputs: with ``resume`` its manifest (as it was
      created), which the writer continues; without, an error saying ``--resume`` or ``--overwrite``;
    * other settings, other images / teacher, or our labels in another layout: an error naming the
      difference."""
    if entries(path) and not is_our_label_store(path):
        raise ForeignFolderError(f"{path} is not empty and holds no soft labels written by lpld (no {meta} of "
                                 f"format {FORMAT_NAME}); it is never replaced, even with --overwrite: choose a "
                                 f"new or empty output directory")
    if not entries(path) or os.path.isfile(os.path.join(path, FILLING)) or overwrite:
        return None
    file = os.path.join(path, meta)
    if not os.path.isfile(file):
        raise FileExistsError(f"{path} already holds soft labels in another layout; pass --overwrite to replace "
                              f"them, or choose another output directory")
    try:
        with open(file) as f:
            old = json.load(f)
    except (OSError, ValueError) as err:
        raise StoreDamagedError(f"cannot read {file}: {err}") from err
    diffs = plan_diffs(old, manifest)
    if diffs:
        detail = "; ".join(f"{k}: store {a!r} vs now {b!r}" for k, (a, b) in diffs.items())
        raise StoreMismatchError(f"{path} already holds a soft-label store with other settings ({detail}). Use "
                                 f"another output directory or --overwrite.")
    fix = "Use another output directory, or --overwrite to regenerate the labels."
    check_bound_inputs(old, path, images_sha256=manifest.get("images_sha256"),
                       train_dir=manifest.get("train_dir", "the image folder"),
                       teacher_sha256=manifest.get("teacher_sha256"),
                       teacher=manifest.get("teacher_path", "the teacher"), fix=fix)
    if old.get("classes") and manifest.get("classes") and old["classes"] != manifest["classes"]:
        raise StoreMismatchError(f"{path} was made with a teacher of other classes than this one. {fix}")
    if not resume:
        raise FileExistsError(f"{path} already holds a soft-label store; pass --resume to continue it or "
                              f"--overwrite to start again")
    return {k: v for k, v in old.items() if k != "num_batches"}  # the store keeps the manifest it was created with


_warned: set[tuple[str, str]] = set()


def warn_once(path: str, topic: str, message: str) -> None:
    """Print ``message`` once per store and topic (stores without hashes load, with a warning)."""
    key = (os.path.abspath(path), topic)
    if key not in _warned:
        _warned.add(key)
        log.warning(message)


def check_bound_inputs(manifest: dict, path: str, *, images_sha256: str | None = None, train_dir: str = "",
                       teacher_sha256: str | None = None, teacher: str = "", fix: str | None = None) -> None:
    """The images / teacher given now must be those the store at ``path`` was made from.

    One line per mismatch naming both hashes, the store, the folder or file, and the fix."""
    if images_sha256 is not None:
        known = check_same("images", manifest.get("images_sha256"), images_sha256, recorded_in=f"label store {path}",
                           actual_at=f"the image folder {train_dir}", error=StoreMismatchError,
                           fix=fix or "Point --train-dir at the images the labels were made from, or regenerate "
                                      "the labels (relabel --overwrite).")
        if not known:
            warn_once(path, "images", f"label store {path} records no content hash of its images (written by an "
                                      f"older lpld or the authors): cannot verify that {train_dir} holds them")
    if teacher_sha256 is not None:
        known = check_same("teacher", manifest.get("teacher_sha256"), teacher_sha256,
                           recorded_in=f"label store {path}", actual_at=f"the teacher {teacher}",
                           error=StoreMismatchError,
                           fix=fix or "Use the teacher checkpoint the labels were made with, or regenerate the "
                                      "labels (relabel --overwrite).")
        if not known:
            warn_once(path, "teacher", f"label store {path} records no content hash of its teacher: cannot verify "
                                       f"that {teacher} is the teacher it was made with")


def image_list_fingerprint(relative_paths: Sequence[str]) -> str:
    """sha1 of the ordered list of image paths relative to the image folder: catches a store used
    with a different or re-ordered distilled set (same count, other files)."""
    digest = hashlib.sha1()
    for rel in relative_paths:
        digest.update(rel.replace(os.sep, "/").encode())
        digest.update(b"\0")
    return digest.hexdigest()


def plan_batches(num_images: int, batch_size: int, epochs: int, prune_ratio: float,
                 drop_last: bool | None = None) -> tuple[int, int, bool]:
    """(batches_per_epoch, planned_batches, drop_last) exactly as the authors' relabel script:
    ``drop_last = prune_ratio > 0`` and ``total_steps = int(epochs * num_batches * (1 - prune_ratio))``."""
    if num_images <= 0:
        raise InputValueError("no images to label")
    if batch_size <= 0:
        raise InputValueError(f"batch_size must be positive; got {batch_size}")
    if not 0.0 <= prune_ratio < 1.0:
        raise InputValueError(f"prune_ratio must be in [0, 1); got {prune_ratio}")
    if drop_last is None:
        drop_last = prune_ratio > 0
    per_epoch = num_images // batch_size if drop_last else -(-num_images // batch_size)
    if per_epoch == 0:
        raise InputValueError(f"{num_images} images make no full batch of {batch_size} with drop_last; "
                         f"lower batch_size")
    total = int(epochs * per_epoch * (1 - prune_ratio))
    if total <= 0:
        raise InputValueError(f"epochs={epochs}, prune_ratio={prune_ratio} leave no batch to generate")
    return per_epoch, total, drop_last


def check_compatible(store: Any, *, num_images: int | None = None, num_classes: int | None = None,
                     batch_size: int | None = None, where: str = "") -> None:
    """Raise :class:`StoreMismatchError` naming the store, the two values and the fix."""
    path = getattr(store, "path", "?")
    ctx = f" ({where})" if where else ""
    if batch_size is not None and store.batch_size != batch_size:
        raise StoreMismatchError(
            f"soft-label store {path} was generated with batch size {store.batch_size}, but "
            f"batch size {batch_size} is requested{ctx}. Use --batch-size {store.batch_size} (and "
            f"gradient accumulation for a smaller step) or regenerate the labels.")
    if num_classes is not None and store.num_classes != num_classes:
        k = store.manifest.get("label_topk")
        if k is not None:
            raise StoreMismatchError(
                f"soft-label store {path} holds top-{k} labels indexing {store.num_classes} classes, but the "
                f"model/dataset has {num_classes}{ctx}: its class indices would name other classes. Use the "
                f"teacher of this dataset or set --num-classes {store.num_classes}.")
        raise StoreMismatchError(
            f"soft-label store {path} holds logits over {store.num_classes} classes, but the "
            f"model/dataset has {num_classes}{ctx}. Use the teacher of this dataset or set "
            f"--num-classes {store.num_classes}.")
    if num_images is not None:
        known = store.manifest.get("num_images")
        if known is not None and int(known) != num_images:
            raise StoreMismatchError(
                f"soft-label store {path} was generated for {known} images, but the image folder "
                f"has {num_images}{ctx}. Point --train-dir at the distilled images the labels were "
                f"made from, or regenerate the labels.")
        top = store.max_image_index()
        if top >= num_images:
            raise StoreMismatchError(
                f"soft-label store {path} refers to image index {top}, but the image folder has "
                f"only {num_images} images{ctx}. These labels belong to another image set.")


def describe_ids(ids: list[int], limit: int = 12) -> str:
    shown = ", ".join(map(str, ids[:limit]))
    return shown + (f", ... ({len(ids)} in all)" if len(ids) > limit else "")


class OrderedBatchWriter:
    """What both store writers share: batches are written in id order up to ``planned_batches``."""

    manifest: dict
    next_id: int
    path: str

    @property
    def planned(self) -> int:
        return int(self.manifest["planned_batches"])

    @property
    def done(self) -> bool:
        return self.next_id >= self.planned

    def check_next(self, batch_id: int) -> None:
        if batch_id != self.next_id:
            raise ValueError(f"batches must be written in order: expected {self.next_id}, got {batch_id}")
        if self.done:
            raise ValueError(f"{self.path} is complete ({self.planned} batches)")

