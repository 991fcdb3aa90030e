"""Checks the squeeze stage makes before any work, in one call from its run function.

Each returns the lock of the stage's output (hold it for the run: a second writer gets a one-line
error naming this process) after clearing the temporaries a killed run left there, and raises a
one-line :class:`~lpld.utils.errors.LpldInputError` when the inputs disagree: the class lists of
the training split, the validation split and the source teacher (a hidden folder, a missing or
extra class would otherwise shift every label); settings that would write a useless artifact
(``--epochs 0`` writing an untrained teacher); free disk space for the checkpoints.
"""
from __future__ import annotations

import argparse
import os

from ..models import checkpoint_bytes
from ..models.teacher import checkpoint_classes
from ..utils.classes import check_same_classes
from ..utils.errors import InputValueError
from ..utils.io import remove_stale_temporaries, require_free_space
from ..utils.lock import OutputLock, lock_output, lock_run_dir

SPLITS_FIX = "Both splits must hold the same class folders (hidden folders are ignored)."


def squeeze_train(cfg: argparse.Namespace, train_set, val_set) -> OutputLock | None:
    """Teacher training: at least one epoch, the splits' class lists agree, the run dir is ours."""
    if cfg.epochs < 1:
        raise InputValueError(f"--epochs must be >= 1 (got {cfg.epochs}): zero epochs would write an untrained "
                              f"teacher.pth")
    check_same_classes(train_set.classes, val_set.classes, expected_what=f"the training split of {cfg.data_path}",
                       got_what="the validation split", fix=SPLITS_FIX)
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
    check_same_classes(train_set.classes, val_set.classes, expected_what=f"the training split of {cfg.data_path}",
                       got_what="the validation split", fix=SPLITS_FIX)
    source = checkpoint_classes(cfg.weights) if os.path.isfile(cfg.weights) else None
    check_same_classes(source, train_set.classes, expected_what=f"the teacher {cfg.weights}",
                       got_what=f"the dataset {cfg.data_path}", fix="Use the dataset the teacher was trained on.")
    lock = lock_output(output, "class-BN teacher", beside=True)
    remove_stale_temporaries(os.path.dirname(os.path.abspath(output)), [os.path.basename(output)])
    size = os.path.getsize(cfg.weights) if os.path.isfile(cfg.weights) else 0
    require_free_space(os.path.dirname(os.path.abspath(output)), 3 * size, "class-BN teacher")
    return lock
