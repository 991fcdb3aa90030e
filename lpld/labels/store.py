"""Our soft-label store: fixed-size memory-mapped ``.npy`` arrays plus a JSON manifest; its layout
and its reader (:class:`LabelStore`). The writer is :mod:`lpld.labels.store_writer`.

Layout of a store directory::

    manifest.json       dataset, teacher, seed, batch size, epochs, plan, mix type, classes, ...
    progress.json       {"committed": n}: batches 0..n-1 are complete (rewritten atomically)
    logits.npy          float16 [planned, B, classes]   teacher logits on the mixed batch
    image_indices.npy   int64   [planned, B]            dataset indices (-1 pads a short batch)
    batch_sizes.npy     int32   [planned]
    crops.npy           float32 [planned, B, 4]         (top/H, left/W, height/H, width/W)
    flips.npy           bool    [planned, B]            (flip recipe)  | cutout.npy float32 [planned, B, 7]
    mix_index.npy       int64   [planned, B]            (cutmix / mixup)
    mix_lam.npy         float64 [planned]               (cutmix / mixup)
    mix_bbox.npy        int64   [planned, 4]            (cutmix)

    checksums.npy       uint32  [planned]               crc32 of every array's row of each batch

Arrays are preallocated for the planned number of batches when the store is created, their disk
space reserved (``posix_fallocate``: a full disk is reported before any work, never as a SIGBUS
while writing into a map), and the empty store appears under its final name only once complete,
via a temporary directory. A writer fills rows in order with each batch's checksum, flushes the
maps, then atomically bumps ``progress.json``: a reader never sees a batch past the committed
count, and a restarted generation rewrites from that count on.

Damage is detected, never papered over: every array's size is checked on open (a truncated file
is an error; it is never grown back with zeros), a resumed writer verifies the checksums of every
committed batch, and every read verifies its batch. ``check-labels --repair`` regenerates exactly
the damaged batches. Version 1 stores (no checksums) load with a warning.

Reading a batch slices the maps (opened lazily per process, so forked DataLoader workers each
get their own) -- no unpickling.
"""
from __future__ import annotations

import json
import os
import zlib
from typing import Any, Iterable

import numpy as np
import torch

from ..augment import BatchRecord
from .common import (AUGMENTATION_MODES, FORMAT_NAME, FORMAT_VERSION, LABEL_CODECS, InputValueError, StoreDamagedError,
                     StoreMismatchError, check_manifest_counts, plan_batches, plan_value, repair_hint, warn_once)
from .regen import DIGEST_BYTES, DIGEST_SCHEME, REGEN_KEYS, AugmentationRegenerator
from .topk import Uint8Values, check_topk, decode_uint8, index_dtype

MANIFEST = "manifest.json"
PROGRESS = "progress.json"
CHECKSUMS = "checksums"
PADDED = ("image_indices", "mix_index")  # arrays whose unused (short-batch) cells hold -1


def is_topk(manifest: dict[str, Any]) -> bool:
    return manifest.get("label_topk") is not None


def is_regenerated(manifest: dict[str, Any]) -> bool:
    return plan_value(manifest, "augmentation") == "regenerated"


def array_specs(manifest: dict[str, Any]) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    """Name -> (shape, dtype) of every array a store with this manifest holds."""
    p, b, c = manifest["planned_batches"], manifest["batch_size"], manifest["num_classes"]
    values_dtype = np.dtype(manifest.get("logits_dtype", "float16"))
    specs: dict[str, tuple[tuple[int, ...], np.dtype]] = {}
    k = manifest.get("label_topk")
    if k is None:
        specs["logits"] = ((p, b, c), values_dtype)
    else:
        if plan_value(manifest, "label_codec") == "uint8":
            specs["topk_codes"] = ((p, b, k), np.dtype(np.uint8))
            specs["topk_row_max"] = ((p, b), np.dtype(np.float16))
            specs["topk_row_min"] = ((p, b), np.dtype(np.float16))
        else:
            specs["topk_values"] = ((p, b, k), values_dtype)
        specs["topk_indices"] = ((p, b, k), np.dtype(str(index_dtype(c)).replace("torch.", "")))
    specs["batch_sizes"] = ((p,), np.dtype(np.int32))
    if is_regenerated(manifest):  # the augmentation is drawn again at training time, checked by a digest
        specs["aug_digest"] = ((p, DIGEST_BYTES), np.dtype(np.uint8))
    else:
        specs["image_indices"] = ((p, b), np.dtype(np.int64))
        specs["crops"] = ((p, b, 4), np.dtype(np.float32))
        if manifest["cutout"]:
            specs["cutout"] = ((p, b, 7), np.dtype(np.float32))
        else:
            specs["flips"] = ((p, b), np.dtype(np.bool_))
        if manifest["mix_type"] in ("cutmix", "mixup"):
            specs["mix_index"] = ((p, b), np.dtype(np.int64))
            specs["mix_lam"] = ((p,), np.dtype(np.float64))
        if manifest["mix_type"] == "cutmix":
            specs["mix_bbox"] = ((p, 4), np.dtype(np.int64))
    if manifest.get("checksums"):
        specs[CHECKSUMS] = ((p,), np.dtype(np.uint32))
    return specs


def label_manifest(manifest: dict[str, Any], path: str = "") -> dict[str, Any]:
    """``manifest`` with its label options checked and the keys that describe them filled in:
    ``label_topk`` (k or None), ``label_codec`` (``float16`` | ``uint8`` for top-k), ``augmentation``
    (``recorded`` | ``regenerated``), ``topk_index_dtype`` and ``aug_digest`` (the digest's scheme)."""
    m = dict(manifest)
    where = f" ({path})" if path else ""
    k = m.get("label_topk")
    if k is not None:
        m["label_topk"] = check_topk(k, int(m["num_classes"]), where=path)
        m["topk_index_dtype"] = str(index_dtype(int(m["num_classes"]))).replace("torch.", "")
        m["label_codec"] = m.get("label_codec") or "float16"
        if m["label_codec"] not in LABEL_CODECS:
            raise InputValueError(f"label_codec must be one of {list(LABEL_CODECS)}; got {m['label_codec']!r}{where}")
    elif m.get("label_codec") not in (None, "float16"):
        raise InputValueError(f"label_codec {m['label_codec']!r} needs top-k labels: set label_topk{where}")
    else:
        m["label_codec"] = None
    m["augmentation"] = plan_value(m, "augmentation")
    if m["augmentation"] not in AUGMENTATION_MODES:
        raise InputValueError(f"augmentation must be one of {list(AUGMENTATION_MODES)}; "
                              f"got {m['augmentation']!r}{where}")
    if m["augmentation"] == "regenerated":
        missing = [key for key in REGEN_KEYS if m.get(key) is None]
        if missing:
            raise InputValueError(f"augmentation 'regenerated' needs the relabel settings {', '.join(missing)} in the "
                                  f"manifest{where}; use augmentation 'recorded'")
        m["aug_digest"] = DIGEST_SCHEME
    return m


def label_row_bytes(manifest: dict[str, Any]) -> int:
    """Bytes of one view's labels as the store keeps them: C fp16/fp32 logits, or k values (fp16,
    or uint8 codes + the row's fp16 max/min) and k class indices."""
    c, k = int(manifest["num_classes"]), manifest.get("label_topk")
    value_bytes = np.dtype(manifest.get("logits_dtype") or "float16").itemsize
    if k is None:
        return c * value_bytes
    index_bytes = np.dtype(str(index_dtype(c)).replace("torch.", "")).itemsize
    if plan_value(manifest, "label_codec") == "uint8":
        return int(k) * (1 + index_bytes) + 4
    return int(k) * (value_bytes + index_bytes)


NPY_HEADER_BYTES = 128  # numpy's .npy header of every array here (version 1.0, padded to 64 bytes)


def full_store_bytes(manifest: dict[str, Any], num_images: int | None = None) -> int:
    """Bytes of the full store of the same relabel run: prune 0 (every epoch), all classes as fp16
    logits, recorded augmentation, checksums -- arrays with their headers, manifest and progress
    file. The reference of ``compression_actual`` (``final.json``)."""
    n = int(num_images or manifest.get("num_images") or 0)
    if not n or manifest.get("epochs") is None:
        raise ValueError("the store does not record its image count and epochs; the full store's size is unknown")
    per_epoch, planned, _ = plan_batches(n, int(manifest["batch_size"]), int(manifest["epochs"]), 0.0)
    full = {**manifest, "planned_batches": planned, "batches_per_epoch": per_epoch, "prune_ratio": 0.0,
            "label_topk": None, "label_codec": None, "augmentation": "recorded", "logits_dtype": "float16",
            "checksums": "crc32", "mix_type": manifest.get("mix_type") or "none",
            "cutout": bool(manifest.get("cutout"))}
    for key in ("num_batches", "topk_index_dtype", "aug_digest", "format"):
        full.pop(key, None)
    arrays = sum(int(np.prod(shape)) * dtype.itemsize + NPY_HEADER_BYTES for shape, dtype in array_specs(full).values())
    manifest_bytes = len(json.dumps({**full, "format": FORMAT_NAME}, indent=2).encode())
    progress_bytes = len(json.dumps({"committed": planned}).encode())
    return arrays + manifest_bytes + progress_bytes


def read_json(path: str) -> dict:
    try:
        with open(path) as f:
            data = json.load(f)
    except (OSError, ValueError) as err:  # ValueError: invalid JSON, or bytes that are not UTF-8
        raise StoreDamagedError(f"cannot read {path}: {err}") from err
    if not isinstance(data, dict):
        raise StoreDamagedError(f"cannot read {path}: it holds a JSON {type(data).__name__}, not an object")
    return data


def _committed(path: str) -> int:
    """The committed batch count of ``progress.json``: an integer >= 0, else the store is damaged."""
    file = os.path.join(path, PROGRESS)
    value = read_json(file).get("committed")
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise StoreDamagedError(f"{file}: 'committed' is {value!r}, not a batch count (an integer >= 0); the store "
                                f"is damaged. {repair_hint(path)}")
    return value


def header_offsets(path: str, specs: dict) -> dict[str, int]:
    """Check every array's header and size; return where each array's data starts.

    A file shorter than its shape needs (an interrupted copy, a full disk, a truncation) is an
    error: it is never memory-mapped, since a writable map would silently grow it back with zeros."""
    offsets = {}
    for name, (shape, dtype) in specs.items():
        file = os.path.join(path, name + ".npy")
        try:
            with open(file, "rb") as f:
                version = np.lib.format.read_magic(f)
                header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                          else np.lib.format.read_array_header_2_0)(f)
                offsets[name] = f.tell()
        except (OSError, ValueError) as err:
            raise StoreDamagedError(f"{file}: not a readable .npy array ({err}); the store is damaged. "
                                    f"{repair_hint(path)}") from err
        if tuple(header[0]) != shape or header[2] != dtype or header[1]:
            raise StoreDamagedError(f"{file}: holds {header[0]} {header[2]}, the manifest says {shape} {dtype}")
        expected = offsets[name] + int(np.prod(shape)) * dtype.itemsize
        size = os.path.getsize(file)
        if size != expected:
            raise StoreDamagedError(f"{file} is {size:,} bytes but its shape needs {expected:,}: the store is "
                                    f"damaged ({'truncated' if size < expected else 'overlong'}). "
                                    f"{repair_hint(path)}")
    return offsets


def batch_checksum(arrays: dict[str, np.ndarray], batch_id: int) -> int:
    """crc32 of every array's row of ``batch_id`` (padding included), in name order."""
    crc = 0
    for name in sorted(arrays):
        if name != CHECKSUMS:
            crc = zlib.crc32(arrays[name][batch_id:batch_id + 1].tobytes(), crc)
    return crc


def damaged_batches(arrays: dict[str, np.ndarray], batch_ids: Iterable[int]) -> list[int]:
    stored = arrays[CHECKSUMS]
    return [k for k in batch_ids if batch_checksum(arrays, k) != int(stored[k])]


class LabelStore:
    """Read-only view of one of our stores; cheap to pickle (maps are reopened per process)."""

    format = "ours"

    def __init__(self, path: str) -> None:
        self.path = path
        manifest_path = os.path.join(path, MANIFEST)
        if not os.path.isfile(manifest_path):
            raise FileNotFoundError(f"{path}: no {MANIFEST}; not an lpld soft-label store")
        self.manifest = read_json(manifest_path)
        if self.manifest.get("format") != FORMAT_NAME:
            raise StoreMismatchError(f"{manifest_path}: format is {self.manifest.get('format')!r}, "
                                     f"expected {FORMAT_NAME!r}")
        if int(self.manifest.get("format_version", 0)) > FORMAT_VERSION:
            raise StoreMismatchError(f"{manifest_path}: format_version {self.manifest['format_version']} is newer "
                                     f"than this code understands ({FORMAT_VERSION}); update lpld")
        check_manifest_counts(self.manifest, manifest_path)
        self.num_batches = _committed(path)
        self.manifest["num_batches"] = self.num_batches
        self.batches_per_epoch = int(self.manifest["batches_per_epoch"])
        self.batch_size = int(self.manifest["batch_size"])
        self.num_classes = int(self.manifest["num_classes"])
        self._specs = array_specs(self.manifest)
        if self.num_batches > int(self.manifest["planned_batches"]):
            raise StoreDamagedError(f"{path}/{PROGRESS} counts {self.num_batches} batches but the store plans "
                                    f"{self.manifest['planned_batches']}: the store is damaged")
        self._offsets = header_offsets(path, self._specs)
        self.has_checksums = CHECKSUMS in self._specs
        if not self.has_checksums:
            warn_once(path, "checksums", f"label store {path} has no batch checksums (written by an older lpld): "
                                         f"damage to its files cannot be detected")
        self._maps: dict[str, np.ndarray] = {}
        self._pid = -1
        self._sizes: list[tuple[int, int]] | None = None
        self._regen: AugmentationRegenerator | None = None

    # -- lazy per-process memory maps -------------------------------------------------------
    def _array(self, name: str) -> np.ndarray:
        if self._pid != os.getpid():
            self._maps, self._pid = {}, os.getpid()
        arr = self._maps.get(name)
        if arr is None:
            shape, dtype = self._specs[name]
            arr = np.memmap(os.path.join(self.path, name + ".npy"), dtype=dtype, mode="r",
                            offset=self._offsets[name], shape=shape)
            self._maps[name] = arr
        return arr

    def _arrays(self) -> dict[str, np.ndarray]:
        return {name: self._array(name) for name in self._specs}

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_maps"], state["_pid"], state["_regen"] = {}, -1, None  # regenerators rebuild per process
        return state

    def __len__(self) -> int:
        return self.num_batches

    def verify(self, batch_ids: Iterable[int] | None = None) -> list[int]:
        """Ids of the committed batches (all, or ``batch_ids``) whose content fails its checksum."""
        if not self.has_checksums:
            return []
        ids = range(self.num_batches) if batch_ids is None else batch_ids
        return damaged_batches(self._arrays(), ids)

    def read(self, batch_id: int) -> BatchRecord:
        if not 0 <= batch_id < self.num_batches:
            raise IndexError(f"batch {batch_id} is not in {self.path} (it holds batches 0..{self.num_batches - 1})")
        if self.has_checksums and self.verify([batch_id]):
            raise StoreDamagedError(f"{self.path}: batch {batch_id} does not match its checksum; the store is "
                                    f"damaged. {repair_hint(self.path)}")
        n = int(self._array("batch_sizes")[batch_id])
        if self.regenerated:
            digest = bytes(np.asarray(self._array("aug_digest")[batch_id]).tobytes())
            rec = self.regenerator().checked_record(batch_id, digest, where=f"label store {self.path}")
            if rec.batch_size != n:
                raise StoreDamagedError(f"{self.path}: batch {batch_id} holds {n} rows but its regenerated "
                                        f"augmentation has {rec.batch_size}; the store is damaged")
        else:
            rec = BatchRecord(batch_id=batch_id,
                              image_indices=torch.from_numpy(np.array(self._array("image_indices")[batch_id, :n])),
                              crops=torch.from_numpy(np.array(self._array("crops")[batch_id, :n])))
            if "flips" in self._specs:
                rec.flips = torch.from_numpy(np.array(self._array("flips")[batch_id, :n]))
            else:
                rec.cutout = torch.from_numpy(np.array(self._array("cutout")[batch_id, :n]))
            if "mix_index" in self._specs:
                rec.mix_index = torch.from_numpy(np.array(self._array("mix_index")[batch_id, :n]))
                rec.mix_lam = float(self._array("mix_lam")[batch_id])
            if "mix_bbox" in self._specs:
                rec.mix_bbox = tuple(int(v) for v in self._array("mix_bbox")[batch_id])
        rec.logits, rec.topk_indices = self._labels(batch_id, n)
        return rec

    def _labels(self, batch_id: int, n: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(logits [n, C], None) of a full store; (top-k values [n, k], class indices [n, k]) of a
        top-k store, 8-bit codes decoded to float32."""
        if "logits" in self._specs:
            return torch.from_numpy(np.array(self._array("logits")[batch_id, :n])), None
        indices = torch.from_numpy(np.array(self._array("topk_indices")[batch_id, :n]))
        if "topk_codes" in self._specs:
            coded = Uint8Values(*(torch.from_numpy(np.array(self._array(name)[batch_id, :n]))
                                  for name in ("topk_codes", "topk_row_max", "topk_row_min")))
            return decode_uint8(coded), indices
        return torch.from_numpy(np.array(self._array("topk_values")[batch_id, :n])), indices

    # -- regenerated augmentation ---------------------------------------------------------------
    @property
    def regenerated(self) -> bool:
        return "aug_digest" in self._specs

    def attach_images(self, sizes) -> None:
        """PIL ``(W, H)`` of the distilled images in dataset order
        (:func:`lpld.labels.regen.image_sizes`): what a regenerated store draws its crops for."""
        self._sizes = [tuple(int(v) for v in s) for s in sizes]
        self._regen = None

    def regenerator(self, need_sizes: bool = True) -> AugmentationRegenerator:
        if need_sizes and self._sizes is None:
            raise StoreMismatchError(
                f"label store {self.path} keeps no augmentation record (augmentation: regenerated): it is drawn "
                f"again from the images, so open it together with its image folder (--train-dir)")
        if self._regen is None or (need_sizes and self._regen.sizes is None):
            self._regen = AugmentationRegenerator(self.manifest, self._sizes)
        return self._regen

    def _image_rows(self, start: int, stop: int) -> list[np.ndarray]:
        sizes = self._array("batch_sizes")[start:stop]
        if self.regenerated:
            regen = self.regenerator(need_sizes=False)
            return [np.asarray(regen.image_indices(b)[:sizes[b - start]]) for b in range(start, stop)]
        rows = self._array("image_indices")[start:stop]
        return [rows[k, :sizes[k]] for k in range(stop - start)]

    def epoch_image_order(self, epoch: int) -> torch.Tensor:
        """Image indices of the stored batches of ``epoch``, in order (the authors' sampler json)."""
        start = epoch * self.batches_per_epoch
        stop = min(start + self.batches_per_epoch, self.num_batches)
        if epoch < 0 or start >= self.num_batches:
            raise IndexError(f"epoch {epoch} has no stored batch in {self.path}")
        return torch.from_numpy(np.concatenate(self._image_rows(start, stop)).astype(np.int64))

    def max_image_index(self) -> int:
        if self.num_batches == 0:
            return -1
        if self.regenerated:  # drawn from a permutation of the manifest's image count
            return int(self.manifest["num_images"]) - 1
        return int(self._array("image_indices")[: self.num_batches].max())

    def nbytes(self) -> int:
        return sum(os.path.getsize(os.path.join(self.path, f)) for f in os.listdir(self.path)
                   if os.path.isfile(os.path.join(self.path, f)))
