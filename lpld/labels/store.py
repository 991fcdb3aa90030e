"""Our soft-label store: fixed-size memory-mapped ``.npy`` arrays plus a JSON manifest.

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

Arrays are preallocated for the planned number of batches when the store is created (the empty
store appears under its final name only once complete, via a temporary directory). A writer fills
rows in order, flushes the maps, then atomically bumps ``progress.json``: a reader never sees a
batch past the committed count, and a restarted generation rewrites from that count on.
Reading a batch slices the maps (opened lazily per process, so forked DataLoader workers each
get their own) -- no unpickling.
"""
from __future__ import annotations

import json
import os
from typing import Any

import numpy as np
import torch

from ..augment import BatchRecord
from ..utils.io import atomic_dir, atomic_json_dump
from .common import FORMAT_NAME, FORMAT_VERSION, PLAN_KEYS, OrderedBatchWriter, StoreMismatchError

MANIFEST = "manifest.json"
PROGRESS = "progress.json"


def array_specs(manifest: dict[str, Any]) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    """Name -> (shape, dtype) of every array a store with this manifest holds."""
    p, b, c = manifest["planned_batches"], manifest["batch_size"], manifest["num_classes"]
    specs = {
        "logits": ((p, b, c), np.dtype(manifest.get("logits_dtype", "float16"))),
        "image_indices": ((p, b), np.dtype(np.int64)),
        "batch_sizes": ((p,), np.dtype(np.int32)),
        "crops": ((p, b, 4), np.dtype(np.float32)),
    }
    if manifest["cutout"]:
        specs["cutout"] = ((p, b, 7), np.dtype(np.float32))
    else:
        specs["flips"] = ((p, b), np.dtype(np.bool_))
    if manifest["mix_type"] in ("cutmix", "mixup"):
        specs["mix_index"] = ((p, b), np.dtype(np.int64))
        specs["mix_lam"] = ((p,), np.dtype(np.float64))
    if manifest["mix_type"] == "cutmix":
        specs["mix_bbox"] = ((p, 4), np.dtype(np.int64))
    return specs


def _is_label_folder(path: str) -> bool:
    """A store of ours or the authors' layout (the only folders ``overwrite`` may replace)."""
    return (os.path.isfile(os.path.join(path, MANIFEST)) or os.path.isdir(os.path.join(path, "epoch_0"))
            or os.path.isfile(os.path.join(path, "lpld_manifest.json")))


def _read_json(path: str) -> dict:
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, json.JSONDecodeError) as err:
        raise ValueError(f"cannot read {path}: {err}") from err


class LabelStore:
    """Read-only view of one of our stores; cheap to pickle (maps are reopened per process)."""

    format = "ours"

    def __init__(self, path: str) -> None:
        self.path = path
        manifest_path = os.path.join(path, MANIFEST)
        if not os.path.isfile(manifest_path):
            raise FileNotFoundError(f"{path}: no {MANIFEST}; not an lpld soft-label store")
        self.manifest = _read_json(manifest_path)
        if self.manifest.get("format") != FORMAT_NAME:
            raise ValueError(f"{manifest_path}: format is {self.manifest.get('format')!r}, expected {FORMAT_NAME!r}")
        if int(self.manifest.get("format_version", 0)) > FORMAT_VERSION:
            raise ValueError(f"{manifest_path}: format_version {self.manifest['format_version']} is newer "
                             f"than this code understands ({FORMAT_VERSION}); update lpld")
        self.num_batches = int(_read_json(os.path.join(path, PROGRESS))["committed"])
        self.manifest["num_batches"] = self.num_batches
        self.batches_per_epoch = int(self.manifest["batches_per_epoch"])
        self.batch_size = int(self.manifest["batch_size"])
        self.num_classes = int(self.manifest["num_classes"])
        self._specs = array_specs(self.manifest)
        self._offsets = self._header_offsets()
        self._maps: dict[str, np.ndarray] = {}
        self._pid = -1

    # -- lazy per-process memory maps -------------------------------------------------------
    def _header_offsets(self) -> dict[str, int]:
        """Check every array's header once (in the process that opens the store) and remember where
        its data starts, so a worker maps it without parsing the header again."""
        offsets = {}
        for name, (shape, dtype) in self._specs.items():
            file = os.path.join(self.path, name + ".npy")
            try:
                with open(file, "rb") as f:
                    version = np.lib.format.read_magic(f)
                    header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                              else np.lib.format.read_array_header_2_0)(f)
                    offsets[name] = f.tell()
            except (OSError, ValueError) as err:
                raise ValueError(f"{file}: not a readable .npy array ({err}); the store is damaged") from err
            if tuple(header[0]) != shape or header[2] != dtype or header[1]:
                raise ValueError(f"{file}: holds {header[0]} {header[2]}, the manifest says {shape} {dtype}")
        return offsets

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

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_maps"], state["_pid"] = {}, -1
        return state

    def __len__(self) -> int:
        return self.num_batches

    def read(self, batch_id: int) -> BatchRecord:
        if not 0 <= batch_id < self.num_batches:
            raise IndexError(f"batch {batch_id} is not in {self.path} (it holds batches 0..{self.num_batches - 1})")
        n = int(self._array("batch_sizes")[batch_id])
        rec = BatchRecord(
            batch_id=batch_id,
            image_indices=torch.from_numpy(np.array(self._array("image_indices")[batch_id, :n])),
            crops=torch.from_numpy(np.array(self._array("crops")[batch_id, :n])),
            logits=torch.from_numpy(np.array(self._array("logits")[batch_id, :n])),
        )
        if "flips" in self._specs:
            rec.flips = torch.from_numpy(np.array(self._array("flips")[batch_id, :n]))
        else:
            rec.cutout = torch.from_numpy(np.array(self._array("cutout")[batch_id, :n]))
        if "mix_index" in self._specs:
            rec.mix_index = torch.from_numpy(np.array(self._array("mix_index")[batch_id, :n]))
            rec.mix_lam = float(self._array("mix_lam")[batch_id])
        if "mix_bbox" in self._specs:
            rec.mix_bbox = tuple(int(v) for v in self._array("mix_bbox")[batch_id])
        return rec

    def epoch_image_order(self, epoch: int) -> torch.Tensor:
        """Image indices of the stored batches of ``epoch``, in order (the authors' sampler json)."""
        start = epoch * self.batches_per_epoch
        stop = min(start + self.batches_per_epoch, self.num_batches)
        if epoch < 0 or start >= self.num_batches:
            raise IndexError(f"epoch {epoch} has no stored batch in {self.path}")
        sizes = self._array("batch_sizes")[start:stop]
        rows = self._array("image_indices")[start:stop]
        return torch.from_numpy(np.concatenate([rows[k, :sizes[k]] for k in range(stop - start)]))

    def max_image_index(self) -> int:
        if self.num_batches == 0:
            return -1
        return int(self._array("image_indices")[: self.num_batches].max())

    def nbytes(self) -> int:
        return sum(os.path.getsize(os.path.join(self.path, f)) for f in os.listdir(self.path)
                   if os.path.isfile(os.path.join(self.path, f)))


class LabelStoreWriter(OrderedBatchWriter):
    """Append batches in generation order to a (new or partly written) store.

    ``resume=True`` continues a store with the same plan after its committed count; a store with
    another plan is an error unless ``overwrite=True``. Commits every ``commit_every`` batches
    and on :meth:`close`."""

    def __init__(self, path: str, manifest: dict[str, Any], *, resume: bool = True,
                 overwrite: bool = False, commit_every: int = 16) -> None:
        self.path = path
        self.manifest = {**manifest, "format": FORMAT_NAME, "format_version": FORMAT_VERSION}
        self.manifest.pop("num_batches", None)
        self.commit_every = max(1, int(commit_every))
        self.specs = array_specs(self.manifest)
        existing = os.path.join(path, MANIFEST)
        if os.path.isfile(existing) and not overwrite:
            old = _read_json(existing)
            diffs = {k: (old.get(k), self.manifest.get(k)) for k in PLAN_KEYS if old.get(k) != self.manifest.get(k)}
            if diffs:
                detail = "; ".join(f"{k}: store {a!r} vs now {b!r}" for k, (a, b) in diffs.items())
                raise StoreMismatchError(f"{path} already holds a soft-label store with other settings "
                                         f"({detail}). Use another output directory or --overwrite.")
            if not resume:
                raise FileExistsError(f"{path} already holds a soft-label store; pass --resume to continue it "
                                      f"or --overwrite to start again")
        elif os.path.isdir(path) and os.listdir(path) and not _is_label_folder(path):
            # never delete a folder we did not write, even with overwrite
            raise FileExistsError(f"{path} exists and is not a soft-label store; choose an empty output directory")
        else:
            self._create()
        self.committed = int(_read_json(os.path.join(path, PROGRESS))["committed"])
        self.next_id = self.committed
        self._maps = {name: np.load(os.path.join(path, name + ".npy"), mmap_mode="r+") for name in self.specs}

    def _create(self) -> None:
        with atomic_dir(self.path) as tmp:
            for name, (shape, dtype) in self.specs.items():
                arr = np.lib.format.open_memmap(os.path.join(tmp, name + ".npy"), mode="w+", dtype=dtype, shape=shape)
                if name in ("image_indices", "mix_index"):
                    arr[...] = -1  # padding of short batches is recognisable
                arr.flush()
                del arr
            atomic_json_dump(self.manifest, os.path.join(tmp, MANIFEST))
            atomic_json_dump({"committed": 0}, os.path.join(tmp, PROGRESS))

    def write(self, record: BatchRecord) -> None:
        self.check_next(record.batch_id)
        k, n = record.batch_id, record.batch_size
        if record.logits is None or tuple(record.logits.shape) != (n, self.manifest["num_classes"]):
            raise ValueError(f"batch {k}: logits must be [{n}, {self.manifest['num_classes']}]")
        m = self._maps
        m["batch_sizes"][k] = n
        m["image_indices"][k, :n] = record.image_indices.numpy()
        m["crops"][k, :n] = record.crops.numpy()
        m["logits"][k, :n] = record.logits.detach().cpu().numpy().astype(m["logits"].dtype)
        if "flips" in m:
            m["flips"][k, :n] = record.flips.numpy()
        if "cutout" in m:
            m["cutout"][k, :n] = record.cutout.numpy()
        if "mix_index" in m:
            m["mix_index"][k, :n] = record.mix_index.numpy()
            m["mix_lam"][k] = record.mix_lam
        if "mix_bbox" in m:
            m["mix_bbox"][k] = np.asarray(record.mix_bbox, dtype=np.int64)
        self.next_id += 1
        if self.next_id - self.committed >= self.commit_every or self.done:
            self.commit()

    def commit(self) -> None:
        """Make every written batch durable, then publish the new count (the order matters)."""
        if self.next_id == self.committed:
            return
        for arr in self._maps.values():
            arr.flush()
        atomic_json_dump({"committed": self.next_id}, os.path.join(self.path, PROGRESS))
        self.committed = self.next_id

    def close(self) -> None:
        self.commit()
        self._maps = {}

    def __enter__(self) -> "LabelStoreWriter":
        return self

    def __exit__(self, exc_type, *exc) -> None:
        # next_id only counts batches whose every array was written, so committing them is safe
        # even when an error interrupted the following batch half-way
        self.close()
