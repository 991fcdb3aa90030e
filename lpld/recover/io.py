"""The distilled-image folder: the authors' ImageFolder layout, written one class at a time, atomically.

Layout (authors' ``save_images``): ``<output_dir>/<exp_name>/new{c:03d}/class{c:03d}_id{i:03d}.jpg``,
JPEG written by PIL with its default quality (75) from ``(x * 255).astype(uint8)``. A class folder is
complete iff it exists under its final name: it is filled in a hidden temporary sibling
(``.new{c:03d}.*.tmp``) and renamed when every image is written.
"""
from __future__ import annotations

import os
import re
import shutil

import numpy as np
import torch
from PIL import Image

from ..utils.io import atomic_dir

_TMP_CLASS_DIR = re.compile(r"^\.new(\d+)\..*\.tmp$")


def class_dir_name(class_id: int) -> str:
    return f"new{class_id:03d}"


def image_name(class_id: int, index: int) -> str:
    return f"class{class_id:03d}_id{index:03d}.jpg"


def class_dir(root: str, class_id: int) -> str:
    return os.path.join(root, class_dir_name(class_id))


def class_complete(root: str, class_id: int, ipc: int) -> bool:
    """True if the class folder exists (complete by construction); an existing folder with another
    number of images means the experiment folder was made with other settings: that is an error."""
    path = class_dir(root, class_id)
    if not os.path.isdir(path):
        return False
    count = sum(1 for f in os.listdir(path) if f.lower().endswith(".jpg"))
    if count != ipc:
        raise FileExistsError(f"{path} exists with {count} images but ipc is {ipc}: it was written with "
                              f"other settings. Use another --exp-name, or delete the folder to redo it.")
    return True


def remove_stale_temporaries(root: str, class_ids: range) -> list[str]:
    """Delete hidden temporary class folders left by a killed run, for classes of ``class_ids`` only
    (other shards may be writing theirs right now). ImageFolder readers would otherwise see them."""
    removed = []
    if not os.path.isdir(root):
        return removed
    for name in os.listdir(root):
        match = _TMP_CLASS_DIR.match(name)
        if match and int(match.group(1)) in class_ids:
            path = os.path.join(root, name)
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed


def save_class(root: str, class_id: int, images: torch.Tensor, quality: int = 75) -> str:
    """Write ``images`` ([n, H, W, 3] uint8) as ``new{c}/class{c}_id{i}.jpg``, i = 0..n-1, atomically."""
    if images.dtype != torch.uint8 or images.dim() != 4 or images.shape[-1] != 3:
        raise ValueError(f"expected [n, H, W, 3] uint8 images, got {tuple(images.shape)} {images.dtype}")
    final = class_dir(root, class_id)
    arrays = images.cpu().numpy()
    with atomic_dir(final) as tmp:
        for i, array in enumerate(arrays):
            Image.fromarray(np.ascontiguousarray(array)).save(os.path.join(tmp, image_name(class_id, i)),
                                                              format="JPEG", quality=quality)
    return final
