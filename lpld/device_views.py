"""Device-side input path: the distilled set decoded once, recorded views cut in batch on the device.

Distilled sets are small (ImageNet-1K IPC 50: 50k images, 7.5 GB as uint8 at 224 px), so they fit
in GPU memory. :class:`ImageBank` decodes them once into one uint8 tensor; :meth:`ImageBank.views`
replays a batch's recorded crop -> resize -> flip -> Cutout for all images at once: a few batched
matrix products instead of per-image PIL calls in DataLoader workers, so feeding a GPU takes
almost no CPU.

The resize reproduces PIL's ``Image.resize(BILINEAR)`` (what :func:`lpld.augment.view_uint8` runs
through torchvision): PIL's triangle filter widened by the downscale factor, its 22-bit
fixed-point coefficients, the horizontal pass rounded to uint8 before the vertical one. The sums
are exact integers in float64, so the views equal PIL's except where a coefficient sum rounds
differently in the last bit (``benchmarks/bench_input_path.py`` measures the pixel and the
teacher-logit difference). The PIL path stays the default where fidelity to released labels matters.
"""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from typing import Sequence

import numpy as np
import torch
from PIL import Image

from .augment import BatchRecord, apply_mix, normalize_views
from .data import load_rgb

PRECISION_BITS = 32 - 8 - 2  # PIL's fixed-point coefficients for 8-bit images (Resample.c)


class ImageBank:
    """uint8 pixels [N, 3, H, W] of every distilled image (padded to the largest), on one device;
    ``sizes`` [N, 2] (CPU) holds each image's own (H, W). On the CPU the tensor lives in shared memory, so
    processes that receive it share it instead of copying."""

    def __init__(self, pixels: torch.Tensor, sizes: torch.Tensor, view_size: int) -> None:
        if pixels.dtype != torch.uint8 or pixels.dim() != 4 or pixels.shape[1] != 3:
            raise ValueError(f"ImageBank needs uint8 [N, 3, H, W] pixels; got {pixels.dtype} {tuple(pixels.shape)}")
        self.pixels, self.sizes, self.view_size = pixels, sizes.cpu(), view_size
        if pixels.device.type == "cpu":
            self.pixels.share_memory_()

    @classmethod
    def from_paths(cls, paths: Sequence[str], device: torch.device, view_size: int,
                   threads: int | None = None) -> "ImageBank":
        """Decode every image once (threads: PIL releases the GIL while decoding)."""
        with ThreadPoolExecutor(threads or min(16, os.cpu_count() or 1)) as pool:
            arrays = list(pool.map(lambda p: np.array(load_rgb(p)), paths))
        if not arrays:
            raise ValueError("ImageBank: no images")
        height = max(a.shape[0] for a in arrays)
        width = max(a.shape[1] for a in arrays)
        pixels = torch.zeros(len(arrays), 3, height, width, dtype=torch.uint8)
        for k, a in enumerate(arrays):
            pixels[k, :, :a.shape[0], :a.shape[1]] = torch.from_numpy(a).permute(2, 0, 1)
        sizes = torch.tensor([a.shape[:2] for a in arrays], dtype=torch.int64)
        return cls(pixels.to(device), sizes, view_size)  # once, at start-up

    @classmethod
    def from_folder(cls, images, device: torch.device, view_size: int) -> "ImageBank":
        """``images``: a :class:`lpld.data.LabeledImages` (indexed like the label store)."""
        return cls.from_paths([p for p, _ in images.samples], device, view_size)

    @property
    def device(self) -> torch.device:
        return self.pixels.device

    def image_sizes(self) -> list[tuple[int, int]]:
        """PIL sizes (W, H) of the images, as the relabel stage draws crops from them."""
        return [(int(w), int(h)) for h, w in self.sizes.tolist()]

    def views(self, record: BatchRecord) -> torch.Tensor:
        """uint8 [B, 3, S, S]: the record's views, as :func:`lpld.augment.views_uint8` cuts them."""
        src = self.pixels[record.image_indices.to(self.device, non_blocking=True)]
        return cut_views(src, self.sizes[record.image_indices], record.crops, record.flips, record.cutout,
                         self.view_size)


def replay_batch_on_device(bank: ImageBank, record: BatchRecord, mean: Sequence[float] | None,
                           std: Sequence[float] | None) -> torch.Tensor:
    """:func:`lpld.augment.replay_batch` on the bank's device: views, normalised, mixed."""
    return apply_mix(normalize_views(bank.views(record), mean, std), record)


def _pixel_boxes(crops: torch.Tensor, hw: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """:func:`lpld.augment._pixel_box` for a batch: (top, left, h, w) in pixels (half to even, as
    Python's ``round``)."""
    height, width = hw[:, 0].to(torch.float64), hw[:, 1].to(torch.float64)
    crops = crops.to(torch.float32).to(torch.float64)  # the stored float32 fractions, exactly
    top = torch.round(crops[:, 0] * height)
    left = torch.round(crops[:, 1] * width)
    h = torch.round(crops[:, 2] * height)
    w = torch.round(crops[:, 3] * width)
    return top, left, h, w


def resample_weights(start: torch.Tensor, extent: torch.Tensor, out_size: int, src_size: int) -> torch.Tensor:
    """PIL's 8-bit bilinear coefficients as dense rows: [B, out_size, src_size] float64 integers
    (scaled by 2**22) mapping source pixels ``start .. start + extent`` to ``out_size`` outputs."""
    dev = start.device
    scale = extent / out_size                                    # [B]
    filterscale = scale.clamp(min=1.0)
    support = filterscale  # bilinear support 1.0, widened when downscaling
    center = (torch.arange(out_size, device=dev, dtype=torch.float64) + 0.5) * scale[:, None]  # [B, out]
    lo = torch.trunc(center - support[:, None] + 0.5).clamp(min=0)
    hi = torch.minimum(torch.trunc(center + support[:, None] + 0.5), extent[:, None])
    x = torch.arange(src_size, device=dev, dtype=torch.float64)[None, None, :] - start[:, None, None]  # [B, 1, src]
    inside = (x >= lo[..., None]) & (x < hi[..., None])
    w = (1.0 - ((x - center[..., None] + 0.5) * (1.0 / filterscale)[:, None, None]).abs()).clamp(min=0) * inside
    w = w / w.sum(-1, keepdim=True).clamp(min=1e-300)
    return torch.floor(0.5 + w * (1 << PRECISION_BITS))


def _fixed_point_to_uint8(acc: torch.Tensor) -> torch.Tensor:
    """PIL's clip8: (acc + 2**21) >> 22, clamped to 0..255 (float64 holding exact integers)."""
    return torch.floor((acc + (1 << (PRECISION_BITS - 1))) / (1 << PRECISION_BITS)).clamp_(0, 255)


def _resize(x: torch.Tensor, wx: torch.Tensor, wy: torch.Tensor, vertical_first: bool) -> torch.Tensor:
    """Two fixed-point passes, each rounded to uint8 like PIL's intermediate image."""
    if vertical_first:
        cols = _fixed_point_to_uint8(torch.matmul(wy[:, None], x))            # [B, 3, S, W]
        return _fixed_point_to_uint8(torch.matmul(cols, wx.transpose(1, 2)[:, None]))
    rows = _fixed_point_to_uint8(torch.matmul(x, wx.transpose(1, 2)[:, None]))  # [B, 3, H, S]
    return _fixed_point_to_uint8(torch.matmul(wy[:, None], rows))


_VERTICAL_FIRST_RULE: list[bool] = []


def pillow_orders_passes() -> bool:
    """Whether the installed Pillow runs the vertical pass first when the height shrinks more
    than twice as much as the width (newer Pillow does; older always starts horizontally).
    Probed once on a small image whose two orders round differently."""
    if not _VERTICAL_FIRST_RULE:
        gen = torch.Generator().manual_seed(0)
        src = torch.randint(0, 256, (70, 34, 3), dtype=torch.uint8, generator=gen)
        ref = torch.from_numpy(np.asarray(Image.fromarray(src.numpy()).resize((50, 40), Image.BILINEAR)).copy())
        x = src.permute(2, 0, 1)[None].to(torch.float64)
        zero = torch.zeros(1, dtype=torch.float64)
        wx = resample_weights(zero, torch.tensor([34.0], dtype=torch.float64), 50, 34)
        wy = resample_weights(zero, torch.tensor([70.0], dtype=torch.float64), 40, 70)
        vertical = _resize(x, wx, wy, True)[0].permute(1, 2, 0).to(torch.uint8)
        _VERTICAL_FIRST_RULE.append(bool(torch.equal(vertical, ref)))
    return _VERTICAL_FIRST_RULE[0]


def cut_views(src: torch.Tensor, hw: torch.Tensor, crops: torch.Tensor, flips: torch.Tensor | None,
              cutout: torch.Tensor | None, size: int) -> torch.Tensor:
    """Batched crop -> bilinear resize to ``size`` -> flip -> Cutout of uint8 images ``src``
    [B, 3, H, W] on any device (each valid in its top-left ``hw`` [B, 2], a CPU tensor like the
    record's ``crops``); returns uint8 [B, 3, size, size] on ``src``'s device. The per-image
    geometry is computed on the host, so nothing here waits for the device."""
    b, c, height, width = src.shape
    dev = src.device
    if b == 0:
        return torch.empty(0, c, size, size, dtype=torch.uint8, device=dev)
    top, left, h, w = _pixel_boxes(crops.cpu(), hw.cpu())
    wx = resample_weights(*(t.to(dev, non_blocking=True) for t in (left, w)), size, width)   # [B, S, W]
    wy = resample_weights(*(t.to(dev, non_blocking=True) for t in (top, h)), size, height)   # [B, S, H]
    x = src.to(torch.float64)
    # Pillow's choice of pass order (it rounds in between, so the order shows in the pixels)
    shrink_h, shrink_w = h - size, w - size
    vertical = (shrink_h > 0) & (shrink_h > 2 * shrink_w) if pillow_orders_passes() else torch.zeros(b, dtype=torch.bool)
    if not vertical.any():
        out = _resize(x, wx, wy, False)
    elif vertical.all():
        out = _resize(x, wx, wy, True)
    else:
        out = torch.empty(b, c, size, size, dtype=torch.float64, device=dev)
        for mask, first in ((~vertical, False), (vertical, True)):
            idx = torch.nonzero(mask).flatten().to(dev, non_blocking=True)
            out[idx] = _resize(x[idx], wx[idx], wy[idx], first)
    out = out.to(torch.uint8)
    if flips is not None:
        flip = flips.to(dev, non_blocking=True).view(-1, 1, 1, 1)
        out = torch.where(flip, out.flip(-1), out)
    if cutout is not None:
        out = _cutout(out, cutout.to(dev, torch.float64, non_blocking=True))
    return out


def _cutout(views: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
    """:func:`lpld.augment._draw_cutout` for a batch: an inclusive box filled with a colour."""
    size_h, size_w = views.shape[2], views.shape[3]
    params = params.to(torch.float32).to(torch.float64)
    y_c, x_c = torch.round(params[:, 0] * size_h), torch.round(params[:, 1] * size_w)
    h_cut, w_cut = torch.round(params[:, 2] * size_h), torch.round(params[:, 3] * size_w)
    y1 = (y_c - torch.div(h_cut, 2, rounding_mode="floor")).clamp(0, size_h)
    y2 = (y_c + torch.div(h_cut, 2, rounding_mode="floor")).clamp(0, size_h)
    x1 = (x_c - torch.div(w_cut, 2, rounding_mode="floor")).clamp(0, size_w)
    x2 = (x_c + torch.div(w_cut, 2, rounding_mode="floor")).clamp(0, size_w)
    rows = torch.arange(size_h, device=views.device, dtype=torch.float64)
    cols = torch.arange(size_w, device=views.device, dtype=torch.float64)
    in_rows = (rows[None] >= y1[:, None]) & (rows[None] <= y2[:, None])       # [B, H]
    in_cols = (cols[None] >= x1[:, None]) & (cols[None] <= x2[:, None])       # [B, W]
    box = (in_rows[:, :, None] & in_cols[:, None, :])[:, None]                 # [B, 1, H, W]
    colour = torch.round(params[:, 4:7]).to(torch.uint8)[:, :, None, None]      # [B, 3, 1, 1]
    return torch.where(box, colour, views)
