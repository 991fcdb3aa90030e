"""Random real subset: ``ipc`` real training images per class, drawn with a seed, as an image source.

The control that "Rethinking Large-scale Dataset Compression" (Xiao et al., arXiv 2502.06434) finds
competitive with distilled images once soft labels are used: no synthesis at all, only a random
choice of real images. Written in the recovered-image layout
(``<output_dir>/<exp_name>/new{c:03d}/class{c:03d}_id{i:03d}.jpg``, :mod:`lpld.recover.io`), so
relabel, validate and the diversity tools treat it like any distilled set.

* Which images: class ``c``'s training images in dataset order (sorted file names), permuted by
  ``numpy.random.default_rng([seed, c])``; the first ``ipc`` of that permutation, in that order
  (``id000`` is the first drawn). A class's images depend on (seed, class) only, never on the class
  range of a run (``--class-start/--class-end`` shards) or on resumption.
* Bytes: a JPEG that needs no resizing is copied byte for byte (the real image, not a re-encoding);
  any other source (the demo's PNGs, a resized image) is written as JPEG at ``jpeg_quality``
  (default 75, PIL's default, the quality every distilled set here is written with), so image bytes
  compare fairly across sources.
* Size: ``image_size: null`` (or 0, for the command line) keeps every image as it is (relabel
  crops any size);
  ``image_size: S`` makes every image S x S: resize the shorter side to S (bilinear, antialiased),
  then centre-crop S x S. The authors' random ImageNet subsets are "preprocessed into fixed 224x224
  resolutions ... for a fair storage comparison" (ArmandXiao/Rethinking-Dataset-Compression
  README); how they resized is not stated, the shorter-side resize + centre crop is ours.
* ``random_real.json`` records the settings and every chosen source image (relative to the
  dataset root), for all classes, so a subset can be audited or rebuilt elsewhere.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
from typing import Any, Sequence

import numpy as np
from PIL import Image
from torchvision.transforms import InterpolationMode
from torchvision.transforms import functional as TF

from ..config import Option, at_most, parse_config
from ..data import DATASET_ALIASES, build_dataset, load_rgb
from ..data.subset import CLASSES_OPTION
from ..utils.errors import InputValueError
from ..utils.io import atomic_dir, atomic_json_dump, ensure_writable_dir
from ..utils.log import get_logger
from ..utils.progress import progress_bar
from .io import class_complete, class_dir, image_name, remove_stale_temporaries

log = get_logger(__name__)

SOURCE = "arXiv 2502.06434 (Rethinking Large-scale Dataset Compression) random baseline"

RANDOM_REAL_SCHEMA = {
    "dataset": Option("imagenet", str, "real training set: tiny (Tiny-ImageNet layout) | imagenet | "
                      "imagefolder | in21k (root/train/<class>/...) | demo",
                      choices=("tiny", "imagenet", "imagefolder", "in21k", "demo", *DATASET_ALIASES)),
    "data_path": Option(None, str, "dataset root (Tiny: the folder with wnids.txt; ImageNet: with train/; "
                        "demo: generated there if absent)"),
    "classes": CLASSES_OPTION,
    "ipc": Option(10, int, "images per class", SOURCE + ": IPC 1/10/20/50/100/200", min=1),
    "seed": Option(0, int, "draw seed; class c's images depend only on (seed, c)", min=0),
    "image_size": Option(None, int, "S: every image S x S (shorter side to S, centre crop); null or 0: keep "
                         "the originals (JPEGs copied byte for byte)", "ArmandXiao/Rethinking-Dataset-Compression "
                         "README: 'preprocessed all images into fixed 224x224'", min=0),
    "jpeg_quality": Option(75, int, "quality of re-encoded images (resized ones, non-JPEG sources)",
                           "PIL default, as every distilled set here", min=0, max=100),
    "class_start": Option(0, int, "first class to write", min=0, check=at_most("class_end", strict=True)),
    "class_end": Option(None, int, "one past the last class (default: all)", min=1),
    "output_dir": Option("recover/syn_data_random_real", str, "root of the image sets"),
    "exp_name": Option("random_real_ipc10", str, "sub-folder of output_dir holding new000/..."),
    "progress": Option(True, bool, "progress bars (tqdm on a terminal, whole lines in a log)"),
}


# --- shared with the other real-image sources (RDED) --------------------------------------------------
def images_by_class(samples: Sequence[tuple[str, int]], num_classes: int) -> list[list[str]]:
    """Paths of each class's images, in dataset order."""
    out: list[list[str]] = [[] for _ in range(num_classes)]
    for path, target in samples:
        out[target].append(path)
    return out


def draw_images(paths: Sequence[str], count: int, seed: int, class_id: int, *, what: str = "ipc") -> list[str]:
    """The first ``count`` of a permutation of ``paths`` seeded by (seed, class_id)."""
    if count > len(paths):
        raise InputValueError(f"class {class_id} has {len(paths)} training images, fewer than --{what} {count}; "
                              f"lower --{what} to at most {len(paths)}")
    order = np.random.default_rng([int(seed), int(class_id)]).permutation(len(paths))[:count]
    return [paths[int(k)] for k in order]


def class_range(cfg: argparse.Namespace, num_classes: int) -> range:
    end = num_classes if cfg.class_end is None else cfg.class_end
    if not 0 <= cfg.class_start < end <= num_classes:
        raise InputValueError(f"class range [{cfg.class_start}, {end}) is invalid for a dataset with {num_classes} "
                              f"classes: need 0 <= --class-start < --class-end <= {num_classes}")
    return range(cfg.class_start, end)



def write_or_check_manifest(path: str, defining: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """Write ``{**defining, **extra}`` to ``path``, or check that an existing manifest (a resumed or
    parallel run) was written with the same defining settings."""
    if os.path.exists(path):
        with open(path) as f:
            old = json.load(f)
        diff = {k: (old.get(k), v) for k, v in defining.items() if old.get(k) != v}
        if diff:
            raise InputValueError(f"{path} was written with other settings (key: (existing, now)): {diff}. "
                                  f"Use another --exp-name, or make the settings agree to resume.")
        return old
    manifest = {**extra, **defining}  # a defining value is never shadowed by an extra one
    atomic_json_dump(manifest, path)
    return manifest


# --- writing ----------------------------------------------------------------------------------------
def _is_jpeg(path: str) -> tuple[bool, tuple[int, int]]:
    try:
        with Image.open(path) as img:
            return img.format == "JPEG", img.size
    except Exception as err:  # noqa: BLE001 - any decoder error: name the file
        raise RuntimeError(f"cannot read image {path}: {err}. Remove or replace the file.") from err


def resize_and_crop(img: Image.Image, size: int) -> Image.Image:
    """Shorter side to ``size`` (bilinear, antialiased), then the centre ``size`` x ``size``."""
    if img.size == (size, size):
        return img
    img = TF.resize(img, size, InterpolationMode.BILINEAR, antialias=True)
    return TF.center_crop(img, [size, size])


def export_image(src: str, dst: str, image_size: int | None, quality: int) -> bool:
    """Write ``src`` to ``dst`` (a .jpg); returns True if the bytes were copied unchanged."""
    jpeg, size = _is_jpeg(src)
    if jpeg and (image_size is None or size == (image_size, image_size)):
        shutil.copyfile(src, dst)
        return True
    img = load_rgb(src)
    if image_size is not None:
        img = resize_and_crop(img, image_size)
    img.save(dst, format="JPEG", quality=quality)
    return False


def write_class(root: str, class_id: int, sources: Sequence[str], image_size: int | None, quality: int) -> int:
    """Write one class folder atomically; returns how many images were copied byte for byte."""
    copied = 0
    with atomic_dir(class_dir(root, class_id)) as tmp:
        for i, src in enumerate(sources):
            copied += export_image(src, os.path.join(tmp, image_name(class_id, i)), image_size, quality)
    return copied


def run_random_real(cfg: argparse.Namespace) -> str:
    """Write classes [class_start, class_end) of the random real subset; returns the folder."""
    if cfg.ipc < 1:
        raise InputValueError(f"--ipc must be >= 1; got {cfg.ipc}")
    if cfg.image_size is not None and cfg.image_size < 0:
        raise InputValueError(f"--image-size must be >= 1 (or 0 to keep the originals); got {cfg.image_size}")
    image_size = cfg.image_size or None
    if not cfg.data_path:
        raise InputValueError("--data-path is required: the real dataset's root")
    dataset = DATASET_ALIASES.get(cfg.dataset, cfg.dataset)
    real = build_dataset(dataset, cfg.data_path, "train", classes=cfg.classes)
    per_class = images_by_class(real.samples, len(real.classes))
    classes = class_range(cfg, len(real.classes))
    root = os.path.join(cfg.output_dir, cfg.exp_name)
    ensure_writable_dir(root, "random-real output directory", owner="images")
    data_root = os.path.abspath(cfg.data_path)
    chosen = [draw_images(paths, cfg.ipc, cfg.seed, c) for c, paths in enumerate(per_class)]
    defining = {"method": "random_real", "dataset": dataset, "data_path": data_root, "ipc": cfg.ipc,
                "seed": cfg.seed, "image_size": image_size, "jpeg_quality": cfg.jpeg_quality,
                "num_classes": len(real.classes), "class_subset": cfg.classes}
    write_or_check_manifest(os.path.join(root, "random_real.json"), defining, {
        "classes": list(real.classes), "layout": "new{c:03d}/class{c:03d}_id{i:03d}.jpg",
        "sources": {str(c): [os.path.relpath(p, data_root) for p in paths] for c, paths in enumerate(chosen)}})
    remove_stale_temporaries(root, classes)
    todo = [c for c in classes if not class_complete(root, c, cfg.ipc)]
    log.info(f"random-real: {dataset} classes [{classes.start}, {classes.stop}) of {len(real.classes)}, ipc "
             f"{cfg.ipc}, seed {cfg.seed}, {len(classes) - len(todo)} already complete -> {root}")
    copied = 0
    for c in progress_bar(todo, desc="random-real", disable=not cfg.progress):
        copied += write_class(root, c, chosen[c], image_size, cfg.jpeg_quality)
    if todo:
        log.info(f"random-real: wrote {len(todo)} classes ({copied} of {len(todo) * cfg.ipc} images copied byte "
                 f"for byte, the others re-encoded as JPEG quality {cfg.jpeg_quality})")
    return root


def main(argv: Sequence[str] | None = None) -> str:
    cfg = parse_config(RANDOM_REAL_SCHEMA, argv, sections=("common", "recover"),
                       description="Random real subset: ipc real training images per class, drawn with a "
                                   "seed, in the recovered-image layout.")
    root = run_random_real(cfg)
    print(root)  # the command's output: the image folder
    return root
