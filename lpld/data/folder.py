"""Image folders with errors that name the path: ImageFolder and Tiny-ImageNet's original layout.

Hidden entries (names starting with '.') are never classes or images: ``.ipynb_checkpoints/``,
``.DS_Store``, the temporaries of interrupted writes and lock files would otherwise become class 0
and shift every label.
"""
from __future__ import annotations

import os
from typing import Callable

from PIL import Image
from torch.utils.data import Dataset

from ..utils.errors import UnreadableImageError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


def load_rgb(path: str) -> Image.Image:
    try:
        with open(path, "rb") as f:
            img = Image.open(f)
            return img.convert("RGB")
    except Exception as err:  # noqa: BLE001 - any decoder error: name the file
        raise UnreadableImageError(f"cannot read image {path}: {err}. Remove or replace the file.") from err


def visible(names) -> list[str]:
    """``names`` without hidden entries, sorted."""
    return sorted(n for n in names if not n.startswith("."))


def _images_in(directory: str) -> list[str]:
    return [os.path.join(directory, f) for f in visible(os.listdir(directory)) if f.lower().endswith(IMAGE_EXTENSIONS)]


def class_folders(root: str) -> list[str]:
    """The class folder names of an ImageFolder root, in class-index order (hidden ones skipped)."""
    return [d for d in visible(os.listdir(root)) if os.path.isdir(os.path.join(root, d))]


def require_dir(path: str, what: str) -> None:
    if not os.path.isdir(path):
        found = "a file" if os.path.exists(path) else "nothing"
        raise FileNotFoundError(f"{what}: expected a directory at {path}, found {found}")


class LabeledImages(Dataset):
    """A list of (path, label) pairs; the base of every image dataset here."""

    def __init__(self, samples: list[tuple[str, int]], classes: list[str],
                 transform: Callable | None = None) -> None:
        self.samples = samples
        self.targets = [t for _, t in samples]
        self.classes = classes
        self.transform = transform

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int):
        path, target = self.samples[index]
        img = load_rgb(path)
        if self.transform is not None:
            img = self.transform(img)
        return img, target


class ImageFolder(LabeledImages):
    """``root/<class>/<image>``; class index = position of the folder name in sorted order, so the
    authors' distilled folders ``new000 .. new999`` map to classes 0..999."""

    def __init__(self, root: str, transform: Callable | None = None) -> None:
        require_dir(root, "image folder")
        classes = class_folders(root)
        if not classes:
            raise FileNotFoundError(f"image folder {root}: expected one sub-folder per class "
                                    f"(root/<class>/<image>), found no sub-folders")
        samples = []
        for idx, name in enumerate(classes):
            files = _images_in(os.path.join(root, name))
            if not files:
                raise FileNotFoundError(f"class folder {os.path.join(root, name)} holds no images "
                                        f"({', '.join(IMAGE_EXTENSIONS)})")
            samples += [(f, idx) for f in files]
        super().__init__(samples, classes, transform)
        self.root = root


class TinyImageNet(LabeledImages):
    """Tiny-ImageNet in its original layout.

    ``train/<wnid>/images/*.JPEG``; ``val/images/*.JPEG`` labelled by ``val/val_annotations.txt``;
    class index = position of the wnid in sorted ``wnids.txt``, so val labels match train labels.
    """

    def __init__(self, root: str, split: str = "train", transform: Callable | None = None) -> None:
        require_dir(root, "Tiny-ImageNet root")
        wnids_file = os.path.join(root, "wnids.txt")
        if not os.path.isfile(wnids_file):
            raise FileNotFoundError(f"Tiny-ImageNet: expected {wnids_file} (one wnid per line); "
                                    f"found {sorted(os.listdir(root))[:10]}")
        with open(wnids_file) as f:
            classes = sorted(line.strip() for line in f if line.strip())
        index = {w: i for i, w in enumerate(classes)}
        if split == "train":
            samples = self._train_samples(root, classes, index)
        elif split == "val":
            samples = self._val_samples(root, index)
        else:
            raise ValueError(f"Tiny-ImageNet split must be 'train' or 'val'; got {split!r}")
        super().__init__(samples, classes, transform)
        self.root = root

    @staticmethod
    def _train_samples(root, classes, index):
        train = os.path.join(root, "train")
        require_dir(train, "Tiny-ImageNet train split")
        samples = []
        for wnid in classes:
            folder = os.path.join(train, wnid, "images")
            require_dir(folder, f"Tiny-ImageNet class {wnid} (listed in wnids.txt)")
            files = _images_in(folder)
            if not files:
                raise FileNotFoundError(f"Tiny-ImageNet class folder {folder} holds no images")
            samples += [(p, index[wnid]) for p in files]
        return samples

    @staticmethod
    def _val_samples(root, index):
        val = os.path.join(root, "val")
        ann = os.path.join(val, "val_annotations.txt")
        if not os.path.isfile(ann):
            raise FileNotFoundError(f"Tiny-ImageNet val: expected {ann} (file<TAB>wnid<TAB>box)")
        samples = []
        with open(ann) as f:
            for lineno, line in enumerate(f, 1):
                parts = line.split()
                if not parts:
                    continue
                if len(parts) < 2 or parts[1] not in index:
                    raise ValueError(f"{ann}:{lineno}: expected 'file wnid ...' with a wnid from "
                                     f"wnids.txt; found {line.strip()!r}")
                path = os.path.join(val, "images", parts[0])
                if not os.path.isfile(path):
                    raise FileNotFoundError(f"{ann}:{lineno} names {path}, which does not exist")
                samples.append((path, index[parts[1]]))
        if not samples:
            raise FileNotFoundError(f"Tiny-ImageNet val: {ann} lists no images")
        return samples
