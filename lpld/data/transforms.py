"""Normalisation constants and the presets of each dataset recipe: one class per train / eval recipe,
as torchvision's ``references/classification/presets.py``.

* :class:`TrainPreset`: RandomResizedCrop + horizontal flip + normalise, the teacher recipe and the
  class-statistics pass (authors' ``forward_once.py``). Students never use it: they replay the
  views recorded with their soft labels (:mod:`lpld.augment`).
* :class:`EvalPreset`: the evaluation recipe of a dataset, for every model evaluated on real
  images (teachers, students, feature extraction): ImageNet-1K Resize(size * 256/224) +
  CenterCrop(size) (the authors' ``load_dataset``: Resize(256) + CenterCrop(224)); Tiny-ImageNet
  and the demo as stored (Resize + CenterCrop to the stored size, a no-op at 64 px); ImageNet-21K-P
  Resize((size, size)) without normalisation (Ridnik et al.'s recipe, which the authors keep).

Values: ImageNet mean/std (torchvision); Tiny-ImageNet mean/std from the authors'
``recover/tiny_forward/forward_once.py`` (0.4802, 0.4481, 0.3975) / (0.2302, 0.2265, 0.2262);
ImageNet-21K-P is used without normalisation (authors' ``data_synthesis_in21k_class.py``):
:func:`normalization` gives it the identity, so code that always normalises leaves it untouched,
and :func:`stored_normalization` records "none" in a label store.
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
# Datasets trained, relabelled and evaluated on raw [0, 1] pixels.
UNNORMALIZED = frozenset({"in21k"})
# Datasets evaluated ImageNet-style: resized to size * 256/224, then centre-cropped.
CENTRE_CROPPED = frozenset({"imagenet", "imagefolder"})


def normalization(dataset: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    try:
        return NORMALIZATION[dataset]
    except KeyError:
        raise ValueError(f"unknown dataset {dataset!r}; expected one of {sorted(NORMALIZATION)}") from None


def stored_normalization(dataset: str) -> tuple[list[float] | None, list[float] | None]:
    """The normalisation a label store records (``normalize``): (None, None) for a dataset used
    without normalisation, as the authors relabel ImageNet-21K-P."""
    if dataset in UNNORMALIZED:
        return None, None
    mean, std = normalization(dataset)
    return list(mean), list(std)


class TrainPreset:
    """RandomResizedCrop(size, scale) + RandomHorizontalFlip + ToTensor + Normalize."""

    def __init__(self, size: int, dataset: str, scale: tuple[float, float] = (0.08, 1.0)) -> None:
        mean, std = normalization(dataset)
        self.transforms = T.Compose([T.RandomResizedCrop(size, scale=scale), T.RandomHorizontalFlip(),
                                     T.ToTensor(), T.Normalize(mean, std)])

    def __call__(self, img):
        return self.transforms(img)


class EvalPreset:
    """The evaluation recipe of ``dataset`` at ``size`` px (see the module docstring)."""

    def __init__(self, size: int, dataset: str) -> None:
        if dataset in UNNORMALIZED:
            steps = [T.Resize((size, size)), T.ToTensor()]
        else:
            resize = int(round(size * 256 / 224)) if dataset in CENTRE_CROPPED else size
            steps = [T.Resize(resize), T.CenterCrop(size), T.ToTensor(), T.Normalize(*normalization(dataset))]
        self.transforms = T.Compose(steps)

    def __call__(self, img):
        return self.transforms(img)


def train_transform(size: int, dataset: str, scale: tuple[float, float] = (0.08, 1.0)) -> TrainPreset:
    return TrainPreset(size, dataset, scale)


def val_transform(size: int, dataset: str) -> EvalPreset:
    return EvalPreset(size, dataset)


def student_val_transform(dataset: str, size: int) -> EvalPreset:
    """The students' evaluation transform (the authors' ``load_dataset``): the dataset's preset."""
    return EvalPreset(size, dataset)
