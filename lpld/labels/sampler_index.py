"""``sampler_indices_epoch.json`` (the authors' image order of every stored batch), parsed strictly
and served from a memory-mapped index (:class:`SamplerIndex`) instead of Python lists."""
from __future__ import annotations

import json
import os
import re
import tempfile
from typing import Any

import numpy as np
import torch

from ..utils.fingerprint import file_sha256
from ..utils.io import atomic_json_dump, atomic_path
from .common import StoreDamagedError


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
        digest = file_sha256(json_path)
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



_LIST = re.compile(rb'"(-?\d+)"\s*:\s*\[([^\]]*)\]')


def sampler_damaged(path: str, what: str) -> StoreDamagedError:
    return StoreDamagedError(f"{path}: {what}; the file is damaged (an interrupted copy or download?). Download the "
                             f"label archive again, or regenerate the labels")


def _strict_orders(raw: Any, path: str) -> dict[int, np.ndarray]:
    """``{epoch: int64 array}`` of parsed json, refusing anything but ``{"<int>": [int, ...]}``:
    numpy would turn ``"7"`` into 7 and ``2.5`` into 2 without a word."""
    if not isinstance(raw, dict):
        raise sampler_damaged(path, f"holds a JSON {type(raw).__name__}, not {{\"<epoch>\": [image indices]}}")
    out: dict[int, np.ndarray] = {}
    for key, values in raw.items():
        try:
            epoch = int(key)
        except ValueError:
            raise sampler_damaged(path, f"key {key!r} is not an epoch number") from None
        if not isinstance(values, list):
            raise sampler_damaged(path, f"epoch {key} maps to a {type(values).__name__}, not a list of image indices")
        bad = [v for v in values if isinstance(v, bool) or not isinstance(v, int)]
        if bad:
            raise sampler_damaged(path, f"epoch {key} lists {bad[0]!r}, which is not an integer image index")
        out[epoch] = np.asarray(values, dtype=np.int64)
    return out


def parse_sampler_json(path: str) -> dict[int, np.ndarray]:
    """``{epoch: int32 array}`` without building Python lists: each epoch's ``[...]`` is parsed by
    numpy. Anything that does not look like a dict of integer lists goes through ``json``, strictly:
    a truncated file, a string or fractional index is a :class:`StoreDamagedError` naming the file."""
    with open(path, "rb") as f:
        data = f.read()
    out: dict[int, np.ndarray] = {}
    consumed = 0
    for m in _LIST.finditer(data):
        body = m.group(2).strip()
        try:
            arr = np.fromstring(body.decode(), dtype=np.int64, sep=",") if body else np.empty(0, np.int64)
        except ValueError:  # newer numpy raises where older versions stopped early with a warning
            break  # not plain integers: let json decide
        if body and arr.size != body.count(b",") + 1:
            break
        out[int(m.group(1))] = arr
        consumed += 1
    if consumed != data.count(b"[") or not _closed_object(data):
        try:
            raw = json.loads(data)
        except ValueError as err:  # invalid JSON (a cut file) or bytes that are not UTF-8
            raise sampler_damaged(path, f"is not valid JSON ({err})") from None
        out = _strict_orders(raw, path)
    for epoch, arr in out.items():
        if arr.size and (arr.min() < 0 or arr.max() >= 2**31):
            raise sampler_damaged(path, f"epoch {epoch} lists image index "
                                         f"{int(arr.min() if arr.min() < 0 else arr.max())}, outside 0..2^31-1")
    return out


def _closed_object(data: bytes) -> bool:
    """The fast path's lists are only trusted in a complete ``{...}`` (a file cut after a list
    would otherwise read as a shorter one; json then reports where it ends)."""
    text = data.strip()
    return text.startswith(b"{") and text.endswith(b"}")


def build_sampler_index(json_path: str, stem: str, digest: str) -> None:
    """Write ``stem.npy`` (int32, every epoch's indices in epoch order) and then ``stem.json``
    (epochs, offsets, max, sha256): the table appears only once the array is complete."""
    orders = parse_sampler_json(json_path)
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
