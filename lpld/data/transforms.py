"""Normalisation constants and the standard train/val transforms of each dataset.

Values: ImageNet mean/std (torchvision); Tiny-ImageNet mean/std from the authors'
``recover/tiny_forward/forward_once.py`` (0.4802, 0.4481, 0.3975) / (0.2302, 0.2265, 0.2262);
ImageNet-21K-P is used without normalisation (authors' ``data_synthesis_in21k_class.py``).
"""
from __future__ import annotations

from torchvision import transforms as T

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
TINY_MEAN = (0.4802, 0.4481, 0.3975)
TINY_STD = (0.2302, 0.2265, 0.2262)
IDENTITY_MEAN = (0.0, 0.0, 0.0)
IDENTITY_STD = (1.0, 1.0, 1.0)

NORMALIZATION = {
    "imagenet": (IMAGENET_MEAN, IMAGENET_STD),
    "imagefolder": (IMAGENET_MEAN, IMAGENET_STD),
    "tiny": (TINY_MEAN, TINY_STD),
    "demo": (TINY_MEAN, TINY_STD),
    "in21k": (IDENTITY_MEAN, IDENTITY_STD),
}


def normalization(dataset: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    try:
        return NORMALIZATION[dataset]
    except KeyError:
        raise ValueError(f"unknown dataset {dataset!r}; expected one of {sorted(NORMALIZATION)}") from None


def train_transform(size: int, dataset: str, scale: tuple[float, float] = (0.08, 1.0)) -> T.Compose:
    """RandomResizedCrop + horizontal flip + normalise: the teacher recipe and the class-statistics
    pass (authors' ``forward_once.py``)."""
    mean, std = normalization(dataset)
    return T.Compose([T.RandomResizedCrop(size, scale=scale), T.RandomHorizontalFlip(),
                      T.ToTensor(), T.Normalize(mean, std)])


def val_transform(size: int, dataset: str) -> T.Compose:
    """ImageNet: Resize(size * 256/224) + CenterCrop(size); Tiny/demo: the image as it is."""
    mean, std = normalization(dataset)
    steps = []
    if dataset in ("imagenet", "imagefolder", "in21k"):
        steps = [T.Resize(int(round(size * 256 / 224))), T.CenterCrop(size)]
    else:
        steps = [T.Resize(size), T.CenterCrop(size)]
    return T.Compose(steps + [T.ToTensor(), T.Normalize(mean, std)])
