"""Datasets: ImageFolder (ImageNet-1K, ImageNet-21K-P, distilled images), Tiny-ImageNet's original
layout, and the generated demo dataset; their presets (:mod:`.transforms`)."""
from __future__ import annotations

import os
from typing import Callable

from .demo import DEMO_DEFAULTS, DEMO_RANGES, make_demo_dataset  # noqa: F401
from .folder import ImageFolder, LabeledImages, TinyImageNet, load_rgb  # noqa: F401
from .subset import FORMAT as CLASSES_FORMAT, class_count, select_classes  # noqa: F401
from .transforms import (EvalPreset, TrainPreset, normalization, stored_normalization,  # noqa: F401
                         student_val_transform, train_transform, val_transform)

DATASETS = ("tiny", "imagenet", "imagefolder", "in21k", "demo")
# The authors' dataset names, accepted everywhere and mapped to ours.
DATASET_ALIASES = {"imagenet1k": "imagenet", "imagenet21k": "in21k"}
# Classes per dataset (the authors' ``class_dict``); other datasets take the count from their data.
DATASET_NUM_CLASSES = {"imagenet": 1000, "in21k": 10450, "tiny": 200}
# Student crop size per dataset when a label store does not record it (the authors' released
# epoch_*/batch_*.tar stores do not): their train_FKD_label_pruning_batch.py load_dataset crops
# 224 px for ImageNet-1K / -21K-P and trains Tiny-ImageNet at its stored 64 px.
DATASET_IMAGE_SIZE = {"imagenet": 224, "in21k": 224, "tiny": 64}


def canonical_dataset(name: str) -> str:
    """Our name for ``name`` (``imagenet1k`` -> ``imagenet``, ``imagenet21k`` -> ``in21k``)."""
    return DATASET_ALIASES.get(name, name)


def dataset_num_classes(dataset: str, classes: str | None = None) -> int | None:
    """The class count of ``dataset`` (its preset), or of its subset ``classes``; None when only the
    data can tell."""
    return class_count(classes) or DATASET_NUM_CLASSES.get(canonical_dataset(dataset))


def build_dataset(dataset: str, root: str, split: str, transform: Callable | None = None,
                  classes: str | None = None) -> LabeledImages:
    """``dataset``: ``tiny`` (the original layout, or an ImageFolder copy ``root/<split>/<wnid>/*``),
    ``imagenet``/``imagefolder``/``in21k`` (``root/<split>/<class>/*``), or ``demo`` (a demo dataset
    of any settings made by ``make_demo_dataset`` / ``lpld make-demo``; it is not generated here, so
    a mistyped path is an error rather than a new dataset). ``classes``: a class subset
    (:mod:`.subset`), relabelled 0..k-1."""
    return select_classes(_whole_dataset(dataset, root, split, transform), classes, f"{dataset} {split} at {root}")


def _is_tiny_folder_copy(root: str) -> bool:
    """Tiny-ImageNet copied into ImageFolder layout (no ``wnids.txt``, class folders under train/)."""
    return not os.path.isfile(os.path.join(root, "wnids.txt")) and os.path.isdir(os.path.join(root, "train"))


def _whole_dataset(dataset: str, root: str, split: str, transform: Callable | None) -> LabeledImages:
    if split not in ("train", "val"):
        raise ValueError(f"split must be 'train' or 'val'; got {split!r}")
    if dataset == "tiny":
        # one dataset, one preset, whichever layout holds its images
        if _is_tiny_folder_copy(root):
            return ImageFolder(os.path.join(root, split), transform)
        return TinyImageNet(root, split, transform)
    if dataset == "demo":
        if not os.path.isfile(os.path.join(root, "demo.json")):  # never generate at a mistyped path
            raise FileNotFoundError(f"no demo dataset at {root} (no demo.json). Check --data-path, or generate one "
                                    f"there with: lpld make-demo {root}  (lpld demo generates it at its default "
                                    f"path by itself)")
        return ImageFolder(os.path.join(root, split), transform)
    if dataset == "in21k" and os.path.isdir(os.path.join(root, f"imagenet21k_{split}")):
        # ImageNet-21K-P as released (Ridnik et al.): imagenet21k_train/ and imagenet21k_val/
        return ImageFolder(os.path.join(root, f"imagenet21k_{split}"), transform)
    if dataset in ("imagenet", "imagefolder", "in21k"):
        return ImageFolder(os.path.join(root, split), transform)
    raise ValueError(f"unknown dataset {dataset!r}; expected one of {DATASETS}")


def build_val_dataset(dataset: str, val_dir: str, transform: Callable | None,
                      classes: str | None = None) -> LabeledImages:
    """A validation split given as its folder (``val_dir`` as in the authors' configs: the split
    folder itself). Tiny-ImageNet's val/ (with ``val_annotations.txt``) or its root (with
    ``wnids.txt``) is read in the original layout; anything with class sub-folders as an ImageFolder.
    ``classes``: a class subset (:mod:`.subset`), relabelled 0..k-1."""
    return select_classes(_whole_val_dataset(dataset, val_dir, transform), classes, f"val_dir {val_dir}")


def _whole_val_dataset(dataset: str, val_dir: str, transform: Callable | None) -> LabeledImages:
    if not os.path.isdir(val_dir):
        raise FileNotFoundError(f"val_dir {val_dir} is not a directory")
    if os.path.isfile(os.path.join(val_dir, "val_annotations.txt")):
        return TinyImageNet(os.path.dirname(os.path.abspath(val_dir)), "val", transform)
    if os.path.isfile(os.path.join(val_dir, "wnids.txt")):
        return TinyImageNet(val_dir, "val", transform)
    if dataset in ("demo", "tiny") and os.path.isdir(os.path.join(val_dir, "val")):
        # the dataset root given for its val split (the demo; an ImageFolder copy of Tiny-ImageNet)
        val_dir = os.path.join(val_dir, "val")
    return ImageFolder(val_dir, transform)
