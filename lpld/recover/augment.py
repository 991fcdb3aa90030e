"""The differentiable augmentation applied to the synthetic images at every recovery step.

The authors (``recover/data_synthesis_class.py``; SRe2L's ``data_synthesis.py`` before them) do, per
iteration and per optimised batch::

    RandomResizedCrop(S) (scale 0.08-1, ratio 3/4-4/3, bilinear, antialias)  -> one draw for the batch
    RandomHorizontalFlip() (p = 0.5)                                          -> one draw for the batch
    torch.roll(shifts=(randint(lo, hi), randint(lo, hi)), dims=(2, 3))        -> one draw for the batch

with ``lo, hi = 0, 32`` for ImageNet (``--jitter 32``; ``random.randint(0, lim)``) and ``-4, 4`` for
Tiny-ImageNet (``data_synthesis_tiny_class.py``: ``random.randint(-jitter, jitter)``).

Here the draws come from an explicit ``torch.Generator`` so that each optimisation group (one class's
batch in LPLD mode) can own its random stream: a batched step over K classes then draws exactly what K
separate single-class runs would draw. :func:`sample_crop` performs torchvision's
``RandomResizedCrop.get_params`` algorithm with the same sequence of random calls, so for a generator
in the same state it returns the same box (tested against torchvision).
"""
from __future__ import annotations

import dataclasses
from typing import Sequence

import torch
from torchvision.transforms import InterpolationMode
from torchvision.transforms import functional as TF

from ..augment import sample_crop as sample_rrc

RATIO = (3.0 / 4.0, 4.0 / 3.0)  # torchvision RandomResizedCrop default, used by the authors


@dataclasses.dataclass(frozen=True)
class AugmentParams:
    """One draw: crop box (top, left, height, width), horizontal flip, circular shift (dy, dx)."""
    top: int
    left: int
    height: int
    width: int
    flip: bool
    shift_y: int
    shift_x: int


def _randint(gen: torch.Generator, low: int, high_exclusive: int) -> int:
    return int(torch.randint(low, high_exclusive, size=(1,), generator=gen).item())


def sample_crop(gen: torch.Generator, height: int, width: int, scale: Sequence[float],
                ratio: Sequence[float] = RATIO) -> tuple[int, int, int, int]:
    """torchvision's ``RandomResizedCrop.get_params`` (10 tries, then a centre crop), drawing from ``gen``;
    the sampler relabel records its crops with (one implementation for both stages)."""
    return sample_rrc(height, width, scale, ratio, generator=gen)


def sample_params(gen: torch.Generator, size: int, scale: Sequence[float], jitter: Sequence[int]) -> AugmentParams:
    """Crop, then flip (``torch.rand(1) < 0.5`` as RandomHorizontalFlip), then the two shifts
    (uniform integers in ``[jitter[0], jitter[1]]`` inclusive, as ``random.randint``)."""
    top, left, h, w = sample_crop(gen, size, size, scale)
    flip = bool(torch.rand(1, generator=gen).item() < 0.5)
    lo, hi = int(jitter[0]), int(jitter[1])
    dy, dx = _randint(gen, lo, hi + 1), _randint(gen, lo, hi + 1)
    return AugmentParams(top, left, h, w, flip, dy, dx)


def apply_params(x: torch.Tensor, p: AugmentParams, size: int) -> torch.Tensor:
    """Differentiable crop-resize (bilinear, antialiased), flip, roll.

    Antialiased as the authors' ``RandomResizedCrop`` on a tensor (torchvision's default). The crop of
    an S x S image resized to S x S is only ever upsampled, where the antialiased kernel's values
    equal plain bilinear to float rounding; its backward does not match bit for bit, and Adam's
    normalised steps carry such differences into the optimised images: the same kernel keeps them."""
    if p.height > x.shape[-2] or p.width > x.shape[-1] or x.shape[-1] != size or x.shape[-2] != size:
        raise ValueError(f"crop {p.height}x{p.width} of a {tuple(x.shape[-2:])} image to {size} px: the "
                         f"crop must fit in the image and the image be {size} x {size}")
    out = TF.resized_crop(x, p.top, p.left, p.height, p.width, [size, size],
                          interpolation=InterpolationMode.BILINEAR, antialias=True)
    if p.flip:
        out = out.flip(-1)
    if p.shift_y or p.shift_x:
        out = torch.roll(out, shifts=(p.shift_y, p.shift_x), dims=(2, 3))
    return out


def apply_grouped(x: torch.Tensor, params: Sequence[AugmentParams], size: int) -> torch.Tensor:
    """Augment ``x`` = [G * n, ...] whose consecutive blocks of n images are the optimisation groups.

    One draw for all groups is a single op on the whole tensor (the cheapest); one draw per group
    augments each block with its own parameters (a loop over groups; each op is batched over the
    group's images, and these few small kernels are negligible next to the teacher's forward/backward).
    """
    if len(params) == 1:
        return apply_params(x, params[0], size)
    blocks = x.chunk(len(params), dim=0)
    if len(blocks) != len(params) or x.shape[0] % len(params):
        raise ValueError(f"{x.shape[0]} images cannot be split into {len(params)} equal groups")
    return torch.cat([apply_params(b, p, size) for b, p in zip(blocks, params)], dim=0)
