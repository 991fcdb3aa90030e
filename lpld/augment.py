"""FKD augmentation with recorded parameters: crop, flip / Cutout, CutMix / MixUp.

The relabel stage draws every random choice once, records it in a :class:`BatchRecord`, and
produces the teacher's input with :func:`replay_batch`; the student rebuilds its input from the
stored record with the very same function, so images and soft labels stay paired by construction.

Semantics follow the authors' ``relabel_and_validate/utils_fkd.py``:

* crop: torchvision ``RandomResizedCrop(size, scale, ratio=(3/4, 4/3))``, bilinear, recorded as
  ``(top/H, left/W, height/H, width/W)`` float32 fractions of the source image
  (``RandomResizedCropWithCoords``);
* flip: horizontal flip with p=0.5, recorded as a bool (``RandomHorizontalFlipWithRes``);
* ImageNet-21K-P: Cutout(0.5) on the cropped image instead of the flip, recorded as
  ``(y_c/h, x_c/w, h_cut/h, w_cut/w, r, g, b)`` float32 (``CutoutPILWithCoords``), no normalisation;
* per batch: CutMix (``lam ~ Beta(1, 1)``, the authors' ``rand_bbox`` box, a permutation) or MixUp
  (``lam ~ Beta(0.8, 0.8)``, a permutation) on the whole normalised batch (``mix_aug``).

Image order: :func:`sampler_orders`, the authors' ``RandomSampler`` with a generator seeded by
``fkd_seed``, iterated epoch after epoch (bit-identical to theirs, so their
``sampler_indices_epoch.json`` and ours agree); relabel draws it once per store and a store with
regenerated augmentation draws it again at training time.

Random stream: the authors draw from global RNGs inside DataLoader workers, which no one can
replay bit for bit. Here every batch has its own generators derived from ``(seed, batch_id)``
(:func:`batch_generators`), so a resumed or re-ordered generation is byte-identical to an
uninterrupted one; the distributions and the order of draws within a batch are the authors'.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
import torch
from PIL import Image, ImageDraw
from torch.utils.data import RandomSampler
from torchvision.transforms import InterpolationMode
from torchvision.transforms import functional as TF

from .utils.errors import InputValueError

MIX_TYPES = ("none", "cutmix", "mixup")
CROP_RATIO = (3.0 / 4.0, 4.0 / 3.0)  # torchvision RandomResizedCrop default, used by the authors
CUTOUT_FACTOR = 0.5  # authors' CutoutPILWithCoords(cutout_factor=0.5)
MIXUP_ALPHA = 0.8  # authors' generate_soft_label_pruning.py --mixup
CUTMIX_ALPHA = 1.0  # authors' generate_soft_label_pruning.py --cutmix


@dataclass
class BatchRecord:
    """Everything needed to rebuild one teacher batch, plus the teacher's logits on it."""

    batch_id: int  # global id: epoch * batches_per_epoch + index within the epoch
    image_indices: torch.Tensor  # int64 [B]: dataset indices in the relabel sampler's order
    crops: torch.Tensor  # float32 [B, 4]: (top/H, left/W, height/H, width/W)
    flips: torch.Tensor | None = None  # bool [B] horizontal flip (None with Cutout)
    cutout: torch.Tensor | None = None  # float32 [B, 7] (y_c/h, x_c/w, h_cut/h, w_cut/w, r, g, b)
    mix_index: torch.Tensor | None = None  # int64 [B] permutation, None without mixing
    mix_lam: float | None = None
    # CutMix box as the authors' rand_bbox returns it: (x1, y1, x2, y2) where x indexes tensor
    # dim 2 (rows) and y dim 3 (columns); identical to the usual reading for square crops.
    mix_bbox: tuple[int, int, int, int] | None = None
    logits: torch.Tensor | None = None  # [B, num_classes] teacher logits (float16 by default)
    extra: dict = field(default_factory=dict)
    # Top-k labels (LPQLD's "MR-k"): ``logits`` then holds the k largest teacher logits per view
    # [B, k] and this their class indices [B, k] (int16 as stored; see lpld.labels.topk).
    topk_indices: torch.Tensor | None = None

    @property
    def label_topk(self) -> int | None:
        """k of a top-k record, None for full logits."""
        return None if self.topk_indices is None else int(self.topk_indices.shape[1])

    @property
    def batch_size(self) -> int:
        return int(self.image_indices.shape[0])

    @property
    def mix_type(self) -> str:
        if self.mix_index is None:
            return "none"
        return "cutmix" if self.mix_bbox is not None else "mixup"


def normalize_mix_type(value) -> str:
    """Map the authors' spellings (``None``, ``"None"``) and ours to one of :data:`MIX_TYPES`."""
    if value is None:
        return "none"
    text = str(value).strip().lower()
    if text in ("", "none", "null", "false"):
        return "none"
    if text not in MIX_TYPES:
        raise InputValueError(f"mix_type must be one of {list(MIX_TYPES)} (or None); got {value!r}")
    return text


def sampler_orders(num_images: int, seed: int, epochs: int) -> np.ndarray:
    """[epochs, num_images] image order of each epoch: the authors' RandomSampler, iterated in turn."""
    gen = torch.Generator()
    gen.manual_seed(seed)
    sampler = RandomSampler(range(num_images), generator=gen)
    dtype = np.int32 if num_images < 2**31 else np.int64
    return np.stack([np.asarray(list(sampler), dtype=dtype) for _ in range(epochs)])


def batch_generators(seed: int, batch_id: int) -> tuple[torch.Generator, np.random.Generator]:
    """Independent torch and numpy generators for one batch, derived from ``(seed, batch_id)``.

    torch draws what the authors draw with torch (crop, flip, permutation), numpy what they draw
    with numpy/random (Beta lambda, CutMix centre, Cutout centre and colour)."""
    seq = np.random.SeedSequence([int(seed), int(batch_id)])
    torch_seed = int(seq.generate_state(1, np.uint64)[0]) & ((1 << 63) - 1)
    gen = torch.Generator()
    gen.manual_seed(torch_seed)
    return gen, np.random.default_rng(seq.spawn(1)[0])


def sample_crop(height: int, width: int, scale: Sequence[float] = (0.08, 1.0),
                ratio: Sequence[float] = CROP_RATIO, generator: torch.Generator | None = None
                ) -> tuple[int, int, int, int]:
    """``RandomResizedCrop.get_params`` with an explicit generator: returns ``(top, left, h, w)``.

    Same algorithm and the same sequence of draws as torchvision (10 tries, then a centre crop);
    with ``generator=None`` it uses the global RNG exactly like torchvision."""
    area = height * width
    log_ratio = torch.log(torch.tensor(ratio, dtype=torch.float32))
    for _ in range(10):
        target_area = area * torch.empty(1).uniform_(scale[0], scale[1], generator=generator).item()
        aspect = math.exp(torch.empty(1).uniform_(log_ratio[0].item(), log_ratio[1].item(),
                                                  generator=generator).item())
        w = int(round(math.sqrt(target_area * aspect)))
        h = int(round(math.sqrt(target_area / aspect)))
        if 0 < w <= width and 0 < h <= height:
            top = int(torch.randint(0, height - h + 1, size=(1,), generator=generator).item())
            left = int(torch.randint(0, width - w + 1, size=(1,), generator=generator).item())
            return top, left, h, w
    in_ratio = width / height
    if in_ratio < min(ratio):
        w, h = width, int(round(width / min(ratio)))
    elif in_ratio > max(ratio):
        h, w = height, int(round(height * max(ratio)))
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


def sample_crop_params(image_sizes: Sequence[tuple[int, int]], generator: torch.Generator,
                       scale: Sequence[float] = (0.08, 1.0), ratio: Sequence[float] = CROP_RATIO,
                       flip: bool = True) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Crops (float32 [B, 4] fractions) and flips (bool [B]) for images of PIL ``size`` (W, H).

    Per image: crop, then flip (``torch.rand(1) < 0.5``), the authors' order of draws."""
    crops = torch.empty(len(image_sizes), 4, dtype=torch.float64)
    flips = torch.zeros(len(image_sizes), dtype=torch.bool)
    for k, (width, height) in enumerate(image_sizes):
        top, left, h, w = sample_crop(height, width, scale, ratio, generator)
        crops[k] = torch.tensor([top / height, left / width, h / height, w / width], dtype=torch.float64)
        if flip:
            flips[k] = bool(torch.rand(1, generator=generator).item() < 0.5)
    return crops.float(), (flips if flip else None)


def sample_cutout(count: int, size: int, rng: np.random.Generator,
                  factor: float = CUTOUT_FACTOR) -> torch.Tensor:
    """Cutout parameters for ``count`` crops of ``size`` x ``size`` (authors' CutoutPILWithCoords:
    box side ``int(factor * side + 0.5)``, uniform centre, uniform RGB fill in 0..255)."""
    h = w = size
    h_cut, w_cut = int(factor * h + 0.5), int(factor * w + 0.5)
    out = torch.empty(count, 7, dtype=torch.float32)
    for k in range(count):
        y_c, x_c = int(rng.integers(h)), int(rng.integers(w))
        colour = [int(c) for c in rng.integers(0, 256, size=3)]
        out[k] = torch.tensor([y_c / h, x_c / w, h_cut / h, w_cut / w, *colour], dtype=torch.float32)
    return out


def cutmix_box(height: int, width: int, lam: float, rng: np.random.Generator) -> tuple[int, int, int, int]:
    """The authors' ``rand_bbox(images.size(), lam)``: its ``W`` is tensor dim 2 and ``H`` dim 3."""
    dim2, dim3 = height, width
    cut_rat = math.sqrt(1.0 - lam)
    cut2, cut3 = int(dim2 * cut_rat), int(dim3 * cut_rat)
    c2, c3 = int(rng.integers(dim2)), int(rng.integers(dim3))
    x1 = int(np.clip(c2 - cut2 // 2, 0, dim2))
    y1 = int(np.clip(c3 - cut3 // 2, 0, dim3))
    x2 = int(np.clip(c2 + cut2 // 2, 0, dim2))
    y2 = int(np.clip(c3 + cut3 // 2, 0, dim3))
    return x1, y1, x2, y2


def sample_batch_params(batch_id: int, image_indices: Sequence[int] | torch.Tensor,
                        image_sizes: Sequence[tuple[int, int]], *, seed: int, size: int,
                        scale: Sequence[float] = (0.08, 1.0), ratio: Sequence[float] = CROP_RATIO,
                        cutout: bool = False, mix_type: str = "none",
                        mixup_alpha: float = MIXUP_ALPHA, cutmix_alpha: float = CUTMIX_ALPHA) -> BatchRecord:
    """Draw and record every random choice of one batch (no logits yet).

    ``image_sizes`` are the source images' PIL sizes ``(W, H)``; ``cutout=True`` selects the
    ImageNet-21K-P recipe (Cutout instead of the flip)."""
    mix_type = normalize_mix_type(mix_type)
    gen, rng = batch_generators(seed, batch_id)
    indices = torch.as_tensor(image_indices, dtype=torch.int64).clone()
    crops, flips = sample_crop_params(image_sizes, gen, scale, ratio, flip=not cutout)
    cut = sample_cutout(len(image_sizes), size, rng) if cutout else None
    record = BatchRecord(batch_id=int(batch_id), image_indices=indices, crops=crops, flips=flips, cutout=cut)
    count = len(image_sizes)
    if mix_type == "cutmix":
        record.mix_index = torch.randperm(count, generator=gen)
        record.mix_lam = float(rng.beta(cutmix_alpha, cutmix_alpha))
        record.mix_bbox = cutmix_box(size, size, record.mix_lam, rng)
    elif mix_type == "mixup":
        record.mix_index = torch.randperm(count, generator=gen)
        record.mix_lam = float(rng.beta(mixup_alpha, mixup_alpha))
    return record


def _pixel_box(crop: torch.Tensor, width: int, height: int) -> tuple[int, int, int, int]:
    # float32 fractions of integer pixel positions: rounding recovers the integers exactly
    # (PIL's crop rounds float boxes the same way when the authors replay them).
    top, left, h, w = (float(v) for v in crop.tolist())
    return round(top * height), round(left * width), round(h * height), round(w * width)


def _draw_cutout(img: Image.Image, params: torch.Tensor) -> Image.Image:
    # Rounding recovers the teacher's integer box on both sides; the authors' student side passes
    # the float32 products to PIL, which truncates (a few centres 1 px off at 224 px).
    w, h = img.size
    y_c, x_c = round(float(params[0]) * h), round(float(params[1]) * w)
    h_cut, w_cut = round(float(params[2]) * h), round(float(params[3]) * w)
    y1, y2 = int(np.clip(y_c - h_cut // 2, 0, h)), int(np.clip(y_c + h_cut // 2, 0, h))
    x1, x2 = int(np.clip(x_c - w_cut // 2, 0, w)), int(np.clip(x_c + w_cut // 2, 0, w))
    colour = tuple(int(round(float(c))) for c in params[4:7])
    ImageDraw.Draw(img).rectangle([x1, y1, x2, y2], fill=colour)  # inclusive box, as the authors'
    return img


def view_uint8(img: Image.Image, crop: torch.Tensor, flip: bool = False, cutout: torch.Tensor | None = None,
               size: int = 224) -> torch.Tensor:
    """One recorded view as uint8 [3, size, size]: resized crop (bilinear, PIL) -> flip -> Cutout."""
    width, height = img.size
    top, left, h, w = _pixel_box(crop, width, height)
    out = TF.resized_crop(img, top, left, h, w, [size, size], InterpolationMode.BILINEAR, antialias=True)
    if flip:
        out = TF.hflip(out)
    if cutout is not None:
        out = _draw_cutout(out, cutout)
    return TF.pil_to_tensor(out)


def views_uint8(images: Sequence[Image.Image], crops: torch.Tensor, flips: torch.Tensor | None,
                cutout: torch.Tensor | None, size: int) -> torch.Tensor:
    """uint8 [B, 3, size, size]: each image with its recorded crop and flip (or Cutout). uint8 is
    what crosses from DataLoader workers to the trainer (a quarter of the float32 bytes);
    :func:`normalize_views` and :func:`apply_mix` finish the batch on the device."""
    if len(images) != crops.shape[0]:
        raise ValueError(f"{len(images)} images but {crops.shape[0]} recorded crops")
    if not images:
        return torch.empty(0, 3, size, size, dtype=torch.uint8)
    return torch.stack([view_uint8(img, crops[k], bool(flips[k]) if flips is not None else False,
                                   cutout[k] if cutout is not None else None, size)
                        for k, img in enumerate(images)])


def normalize_views(views: torch.Tensor, mean, std) -> torch.Tensor:
    """uint8 views -> float32 in [0, 1] -> normalised: the arithmetic of ``ToTensor`` +
    ``Normalize``, on whatever device the views are. ``mean``/``std``: sequences, or tensors
    already on that device (no host-to-device copy per call)."""
    x = views.float().div(255)
    if mean is None or std is None:
        return x
    m = torch.as_tensor(mean, dtype=x.dtype, device=x.device).view(-1, 1, 1)
    s = torch.as_tensor(std, dtype=x.dtype, device=x.device).view(-1, 1, 1)
    return x.sub_(m).div_(s)


def apply_view(img: Image.Image, crop: torch.Tensor, flip: bool = False, cutout: torch.Tensor | None = None,
               size: int = 224, mean: Sequence[float] | None = None, std: Sequence[float] | None = None
               ) -> torch.Tensor:
    """One recorded view, normalised float32 [3, size, size]."""
    return normalize_views(view_uint8(img, crop, flip, cutout, size), mean, std)


def apply_views(images: Sequence[Image.Image], crops: torch.Tensor, flips: torch.Tensor | None,
                cutout: torch.Tensor | None, size: int, mean: Sequence[float] | None,
                std: Sequence[float] | None) -> torch.Tensor:
    """[B, 3, size, size]: each image with its recorded crop and flip (or Cutout), normalised."""
    return normalize_views(views_uint8(images, crops, flips, cutout, size), mean, std)


def apply_mix(batch: torch.Tensor, record: BatchRecord) -> torch.Tensor:
    """Replay the recorded CutMix / MixUp on a batch (a new tensor; ``batch`` is not modified)."""
    if record.mix_index is None:
        return batch
    perm = record.mix_index.to(batch.device, non_blocking=True)
    if record.mix_bbox is not None:
        x1, y1, x2, y2 = (int(v) for v in record.mix_bbox)
        out = batch.clone()
        out[:, :, x1:x2, y1:y2] = batch[perm, :, x1:x2, y1:y2]
        return out
    lam = float(record.mix_lam)
    return lam * batch + (1 - lam) * batch[perm]


def replay_batch(dataset_images: Callable[[int], Image.Image], record: BatchRecord, size: int,
                 mean: Sequence[float] | None, std: Sequence[float] | None) -> torch.Tensor:
    """The teacher's (and the student's) input for ``record``: views of the recorded images, mixed.

    ``dataset_images(i)`` returns the PIL image of dataset index ``i``."""
    images = [dataset_images(int(i)) for i in record.image_indices.tolist()]
    views = apply_views(images, record.crops, record.flips, record.cutout, size, mean, std)
    return apply_mix(views, record)
