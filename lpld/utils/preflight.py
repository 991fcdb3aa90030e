"""Checks a stage makes before any work, in one call from its run function.

Each returns the lock of the stage's output (hold it for the run: a second writer gets a one-line
error naming this process) after clearing the temporaries a killed run left there, and raises a
one-line :class:`~lpld.utils.errors.LpldInputError` when the inputs disagree:

* class lists (names, order) of the training split, the validation split, the teacher and the
  label store -- a hidden folder, a missing or extra class would otherwise shift every label;
* the content hashes a label store records against the images given (a corrupt image is named
  up front, not half-way through an epoch);
* settings that would write a useless artifact (``--epochs 0`` writing an untrained teacher);
* free disk space for the checkpoints about to be written.
"""
from __future__ import annotations

import argparse
import os
import torch

from .classes import check_distilled_folders, check_same_classes
from .errors import InputValueError
from .io import remove_stale_temporaries, require_free_space
from .lock import OutputLock, lock_output


def _is_main_process() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def checkpoint_bytes(arch: str, num_classes: int, copies: float, tiny_stem: bool = False) -> int:
    """``copies`` x the size of the model's tensors (counted on the meta device: nothing is allocated)."""
    from ..models import build_model
    try:
        with torch.device("meta"):
            model = build_model(arch, num_classes, tiny_stem=tiny_stem)
    except Exception:  # noqa: BLE001 - an unknown architecture is reported by the stage itself
        return 0
    tensors = list(model.parameters()) + list(model.buffers())
    return int(copies * sum(t.numel() * t.element_size() for t in tensors))


def lock_run_dir(path: str, what: str) -> OutputLock | None:
    """Lock an output directory (main process only) and clear its stale temporaries."""
    if not _is_main_process():
        return None
    os.makedirs(path, exist_ok=True)
    lock = lock_output(path, what)
    remove_stale_temporaries(path)
    return lock


def squeeze_train(cfg: argparse.Namespace, train_set, val_set) -> OutputLock | None:
    """Teacher training: at least one epoch, the splits' class lists agree, the run dir is ours."""
    if cfg.epochs < 1:
        raise InputValueError(f"--epochs must be >= 1 (got {cfg.epochs}): zero epochs would write an untrained "
                              f"teacher.pth")
    check_same_classes(train_set.classes, val_set.classes, expected_what=f"the training split of {cfg.data_path}",
                       got_what="the validation split",
                       fix="Both splits must hold the same class folders (hidden folders are ignored).")
    if cfg.num_classes is not None and cfg.num_classes != len(train_set.classes):
        raise InputValueError(f"--num-classes {cfg.num_classes} but {cfg.data_path} has {len(train_set.classes)} "
                              f"classes; drop --num-classes")
    lock = lock_run_dir(cfg.output_dir, "teacher training directory")
    # checkpoint.pth (model + SGD momentum), its temporary while being replaced, teacher.pth
    require_free_space(cfg.output_dir, checkpoint_bytes(cfg.model, len(train_set.classes), 5, cfg.tiny_stem),
                       "teacher checkpoints")
    return lock


def class_stats(cfg: argparse.Namespace, train_set, val_set, output: str) -> OutputLock:
    """Class-statistics pass: class lists of the splits and of the source teacher agree."""
    from ..models.teacher import checkpoint_classes
    check_same_classes(train_set.classes, val_set.classes, expected_what=f"the training split of {cfg.data_path}",
                       got_what="the validation split",
                       fix="Both splits must hold the same class folders (hidden folders are ignored).")
    source = checkpoint_classes(cfg.weights) if os.path.isfile(cfg.weights) else None
    check_same_classes(source, train_set.classes, expected_what=f"the teacher {cfg.weights}",
                       got_what=f"the dataset {cfg.data_path}", fix="Use the dataset the teacher was trained on.")
    lock = lock_output(output, "class-BN teacher", beside=True)
    remove_stale_temporaries(os.path.dirname(os.path.abspath(output)), [os.path.basename(output)])
    size = os.path.getsize(cfg.weights) if os.path.isfile(cfg.weights) else 0
    require_free_space(os.path.dirname(os.path.abspath(output)), 3 * size, "class-BN teacher")
    return lock


class ValidateInputs:
    """What :func:`validate` checked: the lock of the run dir and the class list of the labels."""

    def __init__(self, lock: OutputLock | None, classes: list[str] | None) -> None:
        self.lock = lock
        self.classes = classes


def validate(cfg: argparse.Namespace, dataset: str) -> ValidateInputs:
    """Student training: the label store is complete, intact where cheap to tell, made from these
    images; the validation classes are the labels' classes; the run dir is ours."""
    from ..data import DATASET_NUM_CLASSES, ImageFolder
    from ..labels import check_bound_inputs, check_compatible, incomplete_reason, open_label_store
    from ..labels.common import StoreDamagedError
    from ..validate.train import build_val_dataset
    from .fingerprint import scan_images

    store = open_label_store(cfg.label_dir)  # sizes and holes are checked on open
    reason = incomplete_reason(store)
    if reason:
        raise StoreDamagedError(f"label store {cfg.label_dir} is incomplete: {reason}. Finish the generation "
                                f"(rerun the same relabel command; it resumes) before training on it.")
    images = ImageFolder(cfg.train_dir)
    num_classes = cfg.num_classes or DATASET_NUM_CLASSES.get(dataset) or store.num_classes
    check_compatible(store, num_images=len(images), num_classes=num_classes, where=f"train_dir {cfg.train_dir}")
    scan = scan_images([p for p, _ in images.samples], images.root)
    scan.raise_if_bad(cfg.train_dir)
    check_bound_inputs(store.manifest, cfg.label_dir, images_sha256=scan.sha256, train_dir=cfg.train_dir)
    classes = store.manifest.get("classes")
    check_distilled_folders(images.classes, classes, num_classes, cfg.train_dir)
    val_classes = build_val_dataset(dataset, cfg.val_dir, None).classes
    check_same_classes(classes, val_classes, expected_what=f"the labels in {cfg.label_dir} (their teacher)",
                       got_what=f"the validation set {cfg.val_dir}", expected_count=num_classes,
                       fix="Point --val-dir at the validation split of the teacher's dataset.")
    lock = lock_run_dir(cfg.output_dir, "student run directory")
    # checkpoint.pth (model, optimizer state, EMA), its temporary while being replaced, model_best.pth
    require_free_space(cfg.output_dir, checkpoint_bytes(cfg.model, num_classes, 7), "student checkpoints")
    return ValidateInputs(lock, list(classes) if classes else list(val_classes))
