"""Checks student training makes before any work (:func:`validate`): the label store is complete,
intact where cheap to tell and made from these images; the class lists of the images, the labels
(their teacher) and the validation set agree; the run dir is ours and locked; the checkpoints fit.
A run without soft epochs (``label_plan hard``) has no store to check: its image folders must cover
the validation set's classes; a run with hard epochs needs at least a hard batch of images.
Each failure is a one-line :class:`~lpld.utils.errors.LpldInputError` naming both sides."""
from __future__ import annotations

import argparse

from ..data import ImageFolder, build_val_dataset, dataset_num_classes
from ..labels import check_bound_inputs, check_compatible, incomplete_reason, open_label_store
from ..labels.common import StoreDamagedError
from ..models import checkpoint_bytes
from ..utils.classes import check_distilled_folders, check_same_classes
from ..utils.errors import InputValueError
from ..utils.fingerprint import scan_images
from ..utils.io import require_free_space
from ..utils.lock import OutputLock, lock_run_dir


class ValidateInputs:
    """What :func:`validate` checked: the lock of the run dir and the class list of the labels."""

    def __init__(self, lock: OutputLock | None, classes: list[str] | None) -> None:
        self.lock = lock
        self.classes = classes


def validate(cfg: argparse.Namespace, dataset: str, soft: bool = True, hard: bool = False) -> ValidateInputs:
    """Student training: the label store is complete, intact where cheap to tell, made from these
    images; the validation classes are the labels' classes; the run dir is ours. ``soft``: the run
    reads a label store; ``hard``: it has hard epochs."""
    if hard:
        count = len(ImageFolder(cfg.train_dir))
        if cfg.hard_batch_size > count:
            raise InputValueError(f"hard_batch_size {cfg.hard_batch_size} is larger than the {count} distilled images "
                                  f"in {cfg.train_dir}: a hard epoch's batch holds at most all of them; use "
                                  f"--hard-batch-size {count} or less")
    if not soft:
        return _validate_without_store(cfg, dataset)
    store = open_label_store(cfg.label_dir)  # sizes and holes are checked on open
    reason = incomplete_reason(store)
    if reason:
        raise StoreDamagedError(f"label store {cfg.label_dir} is incomplete: {reason}. Finish the generation "
                                f"(rerun the same relabel command; it resumes) before training on it.")
    images = ImageFolder(cfg.train_dir)
    num_classes = cfg.num_classes or dataset_num_classes(dataset, cfg.classes) or store.num_classes
    check_compatible(store, num_images=len(images), num_classes=num_classes, where=f"train_dir {cfg.train_dir}")
    scan = scan_images([p for p, _ in images.samples], images.root)
    scan.raise_if_bad(cfg.train_dir)
    check_bound_inputs(store.manifest, cfg.label_dir, images_sha256=scan.sha256, train_dir=cfg.train_dir)
    classes = store.manifest.get("classes")
    check_distilled_folders(images.classes, classes, num_classes, cfg.train_dir)
    val_classes = build_val_dataset(dataset, cfg.val_dir, None, cfg.classes).classes
    check_same_classes(classes, val_classes, expected_what=f"the labels in {cfg.label_dir} (their teacher)",
                       got_what=f"the validation set {cfg.val_dir}", expected_count=num_classes,
                       fix="Point --val-dir at the validation split of the teacher's dataset.")
    lock = lock_run_dir(cfg.output_dir, "student run directory")
    # checkpoint.pth (model, optimizer state, EMA), its temporary while being replaced, model_best.pth
    require_free_space(cfg.output_dir, checkpoint_bytes(cfg.model, num_classes, 7), "student checkpoints")
    return ValidateInputs(lock, list(classes) if classes else list(val_classes))


def _validate_without_store(cfg: argparse.Namespace, dataset: str) -> ValidateInputs:
    """Hard labels only: the distilled images decode and their class folders are the validation
    set's classes (the authors' ``new<c>`` folders: every class index of it)."""
    images = ImageFolder(cfg.train_dir)
    val_classes = build_val_dataset(dataset, cfg.val_dir, None, cfg.classes).classes
    num_classes = cfg.num_classes or dataset_num_classes(dataset, cfg.classes) or len(val_classes)
    scan_images([p for p, _ in images.samples], images.root).raise_if_bad(cfg.train_dir)
    check_distilled_folders(images.classes, val_classes, num_classes, cfg.train_dir)
    if len(val_classes) != num_classes:
        raise InputValueError(f"the validation set {cfg.val_dir} has {len(val_classes)} classes, but the student has "
                              f"{num_classes}; point --val-dir at the validation split of the images' dataset")
    lock = lock_run_dir(cfg.output_dir, "student run directory")
    require_free_space(cfg.output_dir, checkpoint_bytes(cfg.model, num_classes, 7), "student checkpoints")
    return ValidateInputs(lock, list(val_classes))
