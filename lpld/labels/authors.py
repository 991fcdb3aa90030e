"""The authors' FKD label layout (``generate_soft_label_pruning.py`` / ``utils_fkd.py``)::

    <fkd_path>/epoch_{e}/batch_{b}.tar     torch.save([coords, flip_or_cutout, mix_index, mix_lam, mix_bbox, logits])
    <fkd_path>/sampler_indices_epoch.json  {"<epoch>": [image indices of every generated batch, in order]}

``coords`` float32 [B, 4]; ``flip_or_cutout`` bool [B] (ImageNet-21K-P: Cutout float32 [B, 7]);
``mix_index`` int64 [B] or None; ``mix_lam`` float or None; ``mix_bbox`` [x1, y1, x2, y2] or None;
``logits`` float16 with ``--use-fp16`` (float32 otherwise) [B, classes]. Batch ``b`` of epoch
``e`` is global batch ``e * batches_per_epoch + b`` and holds the images
``json[e][b * B:(b + 1) * B]``.

We write the bbox as Python ints (the authors' are numpy int64, which ``torch.load(weights_only=True)``
refuses); both load in their code and ours. Our metadata goes to ``lpld_manifest.json`` beside the
epoch folders (their loader ignores it).
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
import re
import shutil
import tempfile
from typing import Any

import numpy as np
import torch

from ..augment import BatchRecord
from ..utils.io import atomic_json_dump, atomic_path
from .common import FORMAT_NAME, FORMAT_VERSION, PLAN_KEYS, OrderedBatchWriter, StoreMismatchError

SAMPLER_JSON = "sampler_indices_epoch.json"
META = "lpld_manifest.json"
_EPOCH = re.compile(r"^epoch_(\d+)$")
_BATCH = re.compile(r"^batch_(\d+)\.tar$")


def batch_file(root: str, epoch: int, index: int) -> str:
    return os.path.join(root, f"epoch_{epoch}", f"batch_{index}.tar")


def is_authors_store(path: str) -> bool:
    return os.path.isdir(os.path.join(path, "epoch_0"))


def _numpy_scalar_globals() -> list:
    core = getattr(np, "_core", None) or np.core  # numpy 2 / numpy 1
    kinds = [np.dtype, core.multiarray.scalar]
    kinds += [type(np.dtype(t)) for t in (np.int64, np.int32, np.float64, np.float32)]
    return kinds


def load_batch_file(path: str) -> list:
    """``torch.load`` a batch file safely; the authors' numpy scalars are allow-listed."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        with torch.serialization.safe_globals(_numpy_scalar_globals()):
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - name the file
        raise RuntimeError(f"cannot read soft-label batch {path}: {err}") from err


def save_batch_file(obj: list, path: str) -> None:
    """``torch.save`` through a buffer, then an atomic rename: no half-written file is ever visible,
    and the bytes do not depend on the temporary file's name (torch names the archive after it)."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(buffer.getbuffer())


def _count_batches(epoch_dir: str) -> int:
    """Number of consecutive batch files 0..n-1 in an epoch folder."""
    present = {int(m.group(1)) for f in os.listdir(epoch_dir) if (m := _BATCH.match(f))}
    n = 0
    while n in present:
        n += 1
    return n


class SamplerIndex:
    """``sampler_indices_epoch.json`` as one int32 ``.npy`` array plus a small table of epochs,
    built once and cached under the sha256 of the json's bytes.

    The json of a full ImageNet-1K IPC50 x 300-epoch run lists 15 M image indices: as Python
    lists that is ~0.5 GB in every process that parses it (each DataLoader worker, each rank).
    Here a batch's indices are read from the file with one ``pread`` (the page cache serves it to
    every process), so a process holds only the table; the index pickles as a path. The cache
    lives in ``cache_dir`` (the trainer passes its output directory, since the label folder may
    be read-only); a cache whose json changed is never used (other sha256, other file name)."""

    def __init__(self, indices_path: str, table: dict) -> None:
        self.indices_path = indices_path
        self.epochs = {int(e): (int(a), int(b)) for e, a, b in table["epochs"]}
        self.max_index = int(table["max"])
        with open(indices_path, "rb") as f:
            version = np.lib.format.read_magic(f)
            shape, _, dtype = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                               else np.lib.format.read_array_header_2_0)(f)
            self._data_offset = f.tell()
        if dtype != np.dtype(np.int32) or shape != (int(table["count"]),):
            raise ValueError(f"{indices_path}: holds {shape} {dtype}, expected ({table['count']},) int32; "
                             f"delete it to rebuild the index")
        self._fd, self._pid = -1, -1

    @classmethod
    def open(cls, json_path: str, cache_dir: str) -> "SamplerIndex":
        digest = _sha256(json_path)
        stem = os.path.join(cache_dir, f"sampler_index-{digest[:24]}")
        if not os.path.isfile(stem + ".json"):
            build_sampler_index(json_path, stem, digest)
        with open(stem + ".json") as f:
            table = json.load(f)
        return cls(stem + ".npy", table)

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_fd": -1, "_pid": -1}

    def __del__(self) -> None:
        try:
            if self._fd >= 0 and self._pid == os.getpid():
                os.close(self._fd)
        except Exception:  # noqa: BLE001 - interpreter shutdown
            pass

    def __contains__(self, epoch: int) -> bool:
        return epoch in self.epochs

    def length(self, epoch: int) -> int:
        start, stop = self.epochs[epoch]
        return stop - start

    def take(self, epoch: int, start: int = 0, stop: int | None = None) -> torch.Tensor:
        """int64 image indices ``json[epoch][start:stop]``."""
        first, last = self.epochs[epoch]
        stop = last - first if stop is None else min(stop, last - first)
        count = max(stop - start, 0)
        if self._pid != os.getpid():  # one descriptor per process (forked workers reopen)
            self._fd, self._pid = os.open(self.indices_path, os.O_RDONLY), os.getpid()
        data = os.pread(self._fd, 4 * count, self._data_offset + 4 * (first + start))
        return torch.from_numpy(np.frombuffer(data, dtype=np.int32).astype(np.int64))


def _sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 24), b""):
            digest.update(block)
    return digest.hexdigest()


_LIST = re.compile(rb'"(-?\d+)"\s*:\s*\[([^\]]*)\]')


def _parse_sampler_json(path: str) -> dict[int, np.ndarray]:
    """``{epoch: int32 array}`` without building Python lists: each epoch's ``[...]`` is parsed by
    numpy. Anything that does not look like a dict of integer lists goes through ``json``."""
    with open(path, "rb") as f:
        data = f.read()
    out: dict[int, np.ndarray] = {}
    consumed = 0
    for m in _LIST.finditer(data):
        body = m.group(2).strip()
        arr = np.fromstring(body.decode(), dtype=np.int64, sep=",") if body else np.empty(0, np.int64)
        if body and arr.size != body.count(b",") + 1:
            break  # not plain integers: let json decide
        out[int(m.group(1))] = arr
        consumed += 1
    if consumed != data.count(b"["):
        out = {int(k): np.asarray(v, dtype=np.int64) for k, v in json.loads(data).items()}
    for epoch, arr in out.items():
        if arr.size and (arr.min() < 0 or arr.max() >= 2**31):
            raise ValueError(f"{path}: epoch {epoch} lists image index {int(arr.min() if arr.min() < 0 else arr.max())}, "
                             f"outside 0..2^31-1; the file is damaged")
    return out


def build_sampler_index(json_path: str, stem: str, digest: str) -> None:
    """Write ``stem.npy`` (int32, every epoch's indices in epoch order) and then ``stem.json``
    (epochs, offsets, max, sha256): the table appears only once the array is complete."""
    orders = _parse_sampler_json(json_path)
    epochs, offset = [], 0
    for epoch in sorted(orders):
        epochs.append([epoch, offset, offset + int(orders[epoch].size)])
        offset += int(orders[epoch].size)
    os.makedirs(os.path.dirname(os.path.abspath(stem)), exist_ok=True)
    with atomic_path(stem + ".npy") as tmp:
        arr = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.int32, shape=(offset,))
        for (epoch, start, stop) in epochs:
            arr[start:stop] = orders[epoch]
        arr.flush()
        del arr
    top = max((int(a.max()) for a in orders.values() if a.size), default=-1)
    atomic_json_dump({"epochs": epochs, "max": top, "count": offset, "sha256": digest,
                      "source": os.path.abspath(json_path)}, stem + ".json")


def default_index_dir() -> str:
    """Where the index is cached when the caller names no place: the user's cache (content-
    addressed, so sharing it is safe; the label folder itself is left untouched)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    path = os.path.join(base, "lpld", "sampler_index")
    try:
        os.makedirs(path, exist_ok=True)
    except OSError:
        path = os.path.join(tempfile.gettempdir(), "lpld-sampler-index")
    return path


class AuthorsLabelStore:
    """Read the authors' layout (theirs or one we wrote) through the same API as :class:`LabelStore`."""

    format = "authors"

    def __init__(self, path: str, batches_per_epoch: int | None = None, index_dir: str | None = None) -> None:
        self.path = path
        if not is_authors_store(path):
            raise FileNotFoundError(f"{path}: no epoch_0/ folder; not an FKD soft-label folder")
        meta_path = os.path.join(path, META)
        meta: dict[str, Any] = {}
        if os.path.isfile(meta_path):
            with open(meta_path) as f:
                meta = json.load(f)
        epochs = sorted(int(m.group(1)) for d in os.listdir(path) if (m := _EPOCH.match(d))
                        and os.path.isdir(os.path.join(path, d)))
        counts = []
        for e in range(len(epochs)):
            if e not in epochs:
                break
            counts.append(_count_batches(os.path.join(path, f"epoch_{e}")))
        per_epoch = batches_per_epoch or meta.get("batches_per_epoch") or counts[0]
        if per_epoch <= 0:
            raise ValueError(f"{path}/epoch_0 holds no batch_0.tar")
        total = 0
        for c in counts:  # a store is read up to its first incomplete epoch
            total += min(c, per_epoch)
            if c < per_epoch:
                break
        sampler = os.path.join(path, SAMPLER_JSON)
        if not os.path.isfile(sampler):
            raise FileNotFoundError(f"{sampler} is missing: the label generation did not finish. Rerun it "
                                    f"(it resumes) or download the complete label archive.")
        self._index = SamplerIndex.open(sampler, index_dir or default_index_dir())
        first = load_batch_file(batch_file(path, 0, 0))
        self.batch_size = int(first[0].shape[0])
        self.num_classes = int(first[5].shape[1])
        # batches whose images the json does not list cannot be replayed: leave them out
        total = min(total, sum(-(-self._index.length(k) // self.batch_size) for k in self._index.epochs
                               if k < len(counts)))
        self.num_batches = total
        self.batches_per_epoch = int(per_epoch)
        cutout = first[1].dtype != torch.bool
        mix = "none" if first[2] is None else ("mixup" if first[4] is None else "cutmix")
        self.manifest = {
            "format": "authors", "format_version": FORMAT_VERSION, "dataset": None, "teacher": None,
            "seed": None, "epochs": None, "prune_ratio": None, "num_images": None, "image_size": None,
            **meta,
            "batch_size": self.batch_size, "num_classes": self.num_classes, "num_batches": total,
            "batches_per_epoch": self.batches_per_epoch, "mix_type": mix, "cutout": bool(cutout),
            "logits_dtype": str(first[5].dtype).replace("torch.", ""),
        }
        self.manifest.setdefault("planned_batches", total)

    def __len__(self) -> int:
        return self.num_batches

    def _image_indices(self, epoch: int, index: int) -> torch.Tensor:
        if epoch not in self._index:
            raise KeyError(f"{self.path}/{SAMPLER_JSON} has no entry for epoch {epoch}")
        return self._index.take(epoch, index * self.batch_size, (index + 1) * self.batch_size)

    def read(self, batch_id: int) -> BatchRecord:
        if not 0 <= batch_id < self.num_batches:
            raise IndexError(f"batch {batch_id} is not in {self.path} (it holds batches 0..{self.num_batches - 1})")
        epoch, index = divmod(batch_id, self.batches_per_epoch)
        file = batch_file(self.path, epoch, index)
        coords, second, mix_index, lam, bbox, logits = load_batch_file(file)
        rec = BatchRecord(batch_id=batch_id, image_indices=self._image_indices(epoch, index),
                          crops=coords.float(), logits=logits)
        if second.dtype == torch.bool:
            rec.flips = second
        else:
            rec.cutout = second.float()
        if mix_index is not None:
            rec.mix_index = mix_index.long()
            rec.mix_lam = float(lam)
            rec.mix_bbox = None if bbox is None else tuple(int(v) for v in bbox)
        if rec.image_indices.shape[0] != coords.shape[0]:
            raise StoreMismatchError(f"{file}: {coords.shape[0]} crops but {SAMPLER_JSON} lists "
                                     f"{rec.image_indices.shape[0]} images for it")
        return rec

    def epoch_image_order(self, epoch: int) -> torch.Tensor:
        if epoch not in self._index:
            raise IndexError(f"epoch {epoch} has no stored batch in {self.path}")
        return self._index.take(epoch)

    def max_image_index(self) -> int:
        return self._index.max_index

    def nbytes(self) -> int:
        total = 0
        for root, _, files in os.walk(self.path):
            total += sum(os.path.getsize(os.path.join(root, f)) for f in files)
        return total


class AuthorsStoreWriter(OrderedBatchWriter):
    """Write batches in the authors' layout, one atomic ``torch.save`` per batch.

    Resumable: the batch files present (each complete, thanks to the atomic rename) are the
    progress; the sampler json is written when the run completes or is interrupted."""

    def __init__(self, path: str, manifest: dict[str, Any], *, resume: bool = True,
                 overwrite: bool = False, commit_every: int = 16) -> None:
        self.path = path
        self.manifest = {**manifest, "format": FORMAT_NAME + "/authors", "format_version": FORMAT_VERSION}
        self.manifest.pop("num_batches", None)
        self.per_epoch = int(manifest["batches_per_epoch"])
        meta_path = os.path.join(path, META)
        if os.path.isdir(path) and os.listdir(path):
            is_labels = is_authors_store(path) or os.path.isfile(meta_path) or \
                os.path.isfile(os.path.join(path, "manifest.json"))
            if not is_labels:  # never delete a folder we did not write, even with overwrite
                raise FileExistsError(f"{path} exists and holds no soft labels; choose an empty output directory")
            if overwrite:
                shutil.rmtree(path)
            elif os.path.isfile(meta_path):
                with open(meta_path) as f:
                    old = json.load(f)
                diffs = [k for k in PLAN_KEYS if old.get(k) != self.manifest.get(k)]
                if diffs:
                    raise StoreMismatchError(f"{path} holds labels with other settings ({', '.join(diffs)}); "
                                             f"use another output directory or --overwrite")
                if not resume:
                    raise FileExistsError(f"{path} already holds labels; pass --resume or --overwrite")
            else:
                raise FileExistsError(f"{path} exists and holds no lpld labels; choose an empty output directory")
        os.makedirs(path, exist_ok=True)
        atomic_json_dump(self.manifest, meta_path)
        self.next_id = self._count_done()
        self.committed = self.next_id
        self._indices: dict[int, np.ndarray] = {}  # int32 per batch: 8x smaller than lists of ints

    def _count_done(self) -> int:
        n = 0
        while n < self.planned and os.path.isfile(batch_file(self.path, *divmod(n, self.per_epoch))):
            n += 1
        return n

    def write(self, record: BatchRecord) -> None:
        self.check_next(record.batch_id)
        epoch, index = divmod(record.batch_id, self.per_epoch)
        os.makedirs(os.path.join(self.path, f"epoch_{epoch}"), exist_ok=True)
        second = record.flips if record.cutout is None else record.cutout
        bbox = None if record.mix_bbox is None else [int(v) for v in record.mix_bbox]
        lam = None if record.mix_lam is None else float(record.mix_lam)
        logits = record.logits.detach().cpu()
        if self.manifest.get("logits_dtype", "float16") == "float16":
            logits = logits.half()
        save_batch_file([record.crops.float().contiguous(), second.contiguous(), record.mix_index, lam, bbox,
                         logits.contiguous()], batch_file(self.path, epoch, index))
        self._indices[record.batch_id] = record.image_indices.numpy().astype(np.int32)
        self.next_id += 1
        self.committed = self.next_id

    def commit(self) -> None:
        pass  # every batch file is committed by its atomic rename

    def close(self, epoch_orders=None) -> None:
        """Write ``sampler_indices_epoch.json`` for the batches present. Batches written by an
        earlier (interrupted) run take their images from ``epoch_orders`` (the full sampler order
        of each epoch: lists or arrays) or from the json that run left. The json is written one
        epoch at a time, byte for byte what ``json.dumps`` of the lists gives."""
        bs = int(self.manifest["batch_size"])
        sampler = os.path.join(self.path, SAMPLER_JSON)
        old = _parse_sampler_json(sampler) if os.path.isfile(sampler) else {}
        epochs: dict[int, list[np.ndarray]] = {}
        for gid in range(self.next_id):
            epoch, index = divmod(gid, self.per_epoch)
            if gid in self._indices:
                images = self._indices[gid]
            elif epoch_orders is not None:
                images = np.asarray(epoch_orders[epoch][index * bs:(index + 1) * bs])
            elif epoch in old and old[epoch].size > index * bs:
                images = old[epoch][index * bs:(index + 1) * bs]
            else:
                raise ValueError(f"{self.path}: the images of batch {gid} are unknown (no sampler order given)")
            epochs.setdefault(epoch, []).append(np.asarray(images, dtype=np.int64))
        with atomic_path(sampler) as tmp:
            with open(tmp, "w") as f:
                f.write("{")
                for k, (epoch, parts) in enumerate(epochs.items()):
                    values = np.concatenate(parts) if parts else np.empty(0, np.int64)
                    f.write(f'{", " if k else ""}"{epoch}": [{", ".join(map(str, values.tolist()))}]')
                f.write("}")
