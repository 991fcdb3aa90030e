"""Augmentation regenerated at training time instead of stored, bound by a per-batch checksum.

Relabel draws every batch's augmentation (image order, crops, flips / Cutout, CutMix / MixUp)
from generators seeded by ``(seed, batch id)`` (:func:`lpld.augment.sample_batch_params`,
:func:`lpld.augment.sampler_orders`). A store may therefore keep only the logits and,
per batch, a digest of those parameters: the trainer draws them again from the same settings
and compares digests before it replays a batch. The draws depend on torch's and numpy's random
algorithms, which neither library promises to keep across versions or devices; the digest makes
any drift a clear error instead of images silently paired with another view's labels.

The digest is the first :data:`DIGEST_BYTES` bytes of a SHA-256 over a versioned, explicitly
little-endian encoding of every recorded field (batch id, image indices, crops, flips, Cutout,
mix partners, lambda, box), so it is the same on every platform.
"""
from __future__ import annotations

import hashlib
import math
from typing import Any, Sequence

import numpy as np
import torch
from PIL import Image

from ..augment import BatchRecord, sample_batch_params, sampler_orders
from .common import StoreMismatchError

DIGEST_BYTES = 8  # 64 bits: drift is not adversarial, a chance collision is 2^-64 per batch
_TAG = b"lpld-augmentation-v1"
DIGEST_SCHEME = "sha256-64/" + _TAG.decode()  # the manifest's ``aug_digest``
# Manifest keys that determine every batch's augmentation (besides the images' sizes); the mix
# alphas may be absent (then lpld.augment's defaults, the authors' 0.8 / 1.0).
REGEN_KEYS = ("seed", "batch_size", "batches_per_epoch", "planned_batches", "num_images", "image_size",
              "min_scale_crops", "max_scale_crops", "cutout", "mix_type")


class AugmentationDriftError(StoreMismatchError):
    """A regenerated batch's augmentation differs from the one its labels were made with."""


def augmentation_digest(record: BatchRecord) -> bytes:
    """:data:`DIGEST_BYTES` bytes identifying ``record``'s augmentation (its logits are ignored)."""
    h = hashlib.sha256(_TAG)

    def put(name: str, value, dtype: str) -> None:
        h.update(name.encode() + b"=")
        if value is None:
            h.update(b"none;")
            return
        arr = np.ascontiguousarray(np.asarray(value, dtype=dtype))
        h.update(f"{arr.dtype.str}{arr.shape};".encode())
        h.update(arr.tobytes())

    def numpy_of(tensor):
        return None if tensor is None else tensor.detach().cpu().numpy()

    put("batch_id", [int(record.batch_id)], "<i8")
    put("image_indices", numpy_of(record.image_indices), "<i8")
    put("crops", numpy_of(record.crops), "<f4")
    put("flips", numpy_of(record.flips), "u1")
    put("cutout", numpy_of(record.cutout), "<f4")
    put("mix_index", numpy_of(record.mix_index), "<i8")
    put("mix_lam", None if record.mix_lam is None else [float(record.mix_lam)], "<f8")
    put("mix_bbox", None if record.mix_bbox is None else [int(v) for v in record.mix_bbox], "<i8")
    return h.digest()[:DIGEST_BYTES]


def image_sizes(paths: Sequence[str]) -> list[tuple[int, int]]:
    """PIL ``(W, H)`` of every image (headers only), the sizes the crops were drawn for."""
    sizes = []
    for p in paths:
        with Image.open(p) as im:
            sizes.append(im.size)
    return sizes


class AugmentationRegenerator:
    """Draw batch ``b``'s augmentation again from a store's settings and the images' sizes.

    ``manifest``: the label store's (every key of :data:`REGEN_KEYS`, plus ``mixup_alpha`` /
    ``cutmix_alpha`` when not the defaults); ``sizes``: PIL ``(W, H)``
    of the distilled images in dataset order (:func:`image_sizes`)."""

    def __init__(self, manifest: dict[str, Any], sizes: Sequence[tuple[int, int]] | None) -> None:
        missing = [k for k in REGEN_KEYS if manifest.get(k) is None]
        if missing:
            raise ValueError(f"cannot regenerate augmentation: the store's manifest lacks {', '.join(missing)}")
        self.m = dict(manifest)
        if sizes is not None and len(sizes) != int(self.m["num_images"]):
            raise StoreMismatchError(f"the labels were made for {self.m['num_images']} images, but "
                                     f"{len(sizes)} image sizes were given; use the images the labels were made from")
        # None: only image indices can be drawn (they depend on the seed and the image count alone)
        self.sizes = None if sizes is None else [tuple(int(v) for v in s) for s in sizes]
        self._orders: np.ndarray | None = None

    def _epoch_order(self, epoch: int) -> np.ndarray:
        if self._orders is None:  # all planned epochs at once: one generator stream, as relabel
            epochs = math.ceil(int(self.m["planned_batches"]) / int(self.m["batches_per_epoch"]))
            self._orders = sampler_orders(int(self.m["num_images"]), int(self.m["seed"]), max(epochs, 1))
        return self._orders[epoch]

    def image_indices(self, batch_id: int) -> list[int]:
        if not 0 <= batch_id < int(self.m["planned_batches"]):
            raise IndexError(f"batch {batch_id} is outside the planned 0..{int(self.m['planned_batches']) - 1}")
        epoch, index = divmod(int(batch_id), int(self.m["batches_per_epoch"]))
        bs = int(self.m["batch_size"])
        return self._epoch_order(epoch)[index * bs:(index + 1) * bs].tolist()

    def record(self, batch_id: int) -> BatchRecord:
        """Batch ``batch_id``'s augmentation (no logits), drawn exactly as relabel drew it."""
        m = self.m
        if self.sizes is None:
            raise ValueError("drawing crops needs the images' sizes; pass them to AugmentationRegenerator")
        indices = self.image_indices(batch_id)
        kwargs = {}
        if m.get("mixup_alpha") is not None:
            kwargs["mixup_alpha"] = float(m["mixup_alpha"])
        if m.get("cutmix_alpha") is not None:
            kwargs["cutmix_alpha"] = float(m["cutmix_alpha"])
        return sample_batch_params(int(batch_id), indices, [self.sizes[i] for i in indices], seed=int(m["seed"]),
                                   size=int(m["image_size"]),
                                   scale=(float(m["min_scale_crops"]), float(m["max_scale_crops"])),
                                   cutout=bool(m["cutout"]), mix_type=m["mix_type"], **kwargs)

    def _versions(self) -> str:
        """'(relabel: torch X, numpy Y; now: torch Z, numpy W) ' when the manifest records them."""
        if not self.m.get("torch_version"):
            return ""
        return (f"(relabel: torch {self.m['torch_version']}, numpy {self.m.get('numpy_version')}; now: torch "
                f"{torch.__version__}, numpy {np.__version__}) ")

    def checked_record(self, batch_id: int, expected: bytes, where: str = "") -> BatchRecord:
        """:meth:`record`, after checking its digest against the one stored with the labels."""
        record = self.record(batch_id)
        got = augmentation_digest(record)
        if bytes(expected) != got:
            ctx = f" in {where}" if where else ""
            raise AugmentationDriftError(
                f"batch {batch_id}{ctx}: the regenerated augmentation (digest {got.hex()}) is not the one the "
                f"labels were made with ({bytes(expected).hex()}); likely cause: another torch version or device "
                f"{self._versions()}draws differently (or other images / settings). Train with the torch version "
                f"of the relabel run, or relabel with --augmentation recorded.")
        return record
