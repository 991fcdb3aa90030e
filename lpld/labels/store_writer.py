"""The writer of our soft-label store (:mod:`lpld.labels.store` describes the layout and reads it).

Arrays are preallocated for the planned number of batches when the store is created, their disk
space reserved (``posix_fallocate``: a full disk is reported before any work, never as a SIGBUS
while writing into a map), and the empty store appears under its final name only once complete,
via a temporary directory. The writer fills rows in order with each batch's checksum, flushes the
maps, then atomically bumps ``progress.json``: a reader never sees a batch past the committed
count, and a restarted generation rewrites from that count on, after verifying every committed
batch. In repair mode it opens a damaged store in place and rewrites exactly the damaged batches.
"""
from __future__ import annotations

import json
import os
from typing import Any

import numpy as np

from ..augment import BatchRecord
from ..utils.errors import DiskSpaceError
from ..utils.io import (atomic_dir, atomic_json_dump, free_bytes, human_bytes, is_disk_full, on_disk,
                        remove_stale_temporaries, require_free_space, reserve_file)
from ..utils.lock import lock_output
from .common import (BINDING_KEYS, FORMAT_NAME, FORMAT_VERSION, OrderedBatchWriter, StoreDamagedError,
                     continued_manifest, describe_ids, is_our_label_store, repair_hint)
from .regen import augmentation_digest
from .store import (CHECKSUMS, MANIFEST, PADDED, PROGRESS, array_specs, batch_checksum, damaged_batches,
                    header_offsets, label_manifest, read_json)
from .topk import encode_uint8, select_topk


class LabelStoreWriter(OrderedBatchWriter):
    """Append batches in generation order to a (new or partly written) store.

    ``resume=True`` continues a store with the same plan and inputs after its committed count
    (first verifying every committed batch, ``verify=True``); a store with another plan is an
    error unless ``overwrite=True``. Commits every ``commit_every`` batches and on :meth:`close`.
    The writer holds the store's lock (``.<store>.lpld.lock`` beside it) until :meth:`close`."""

    def __init__(self, path: str, manifest: dict[str, Any] | None, *, resume: bool = True,
                 overwrite: bool = False, commit_every: int = 16, verify: bool = True, repair: bool = False) -> None:
        self.path = path
        self._maps: dict[str, np.ndarray] = {}
        self._lock = lock_output(path, "label store", beside=True)
        try:
            if repair:
                self._open_for_repair()
            else:
                self._open(manifest, resume, overwrite, commit_every, verify)
        except BaseException:
            self._lock.release()
            raise

    def _open_for_repair(self) -> None:
        """Open a damaged store in place: restore every array's header and size (zeros where a file
        was cut), and list in :attr:`damaged` the committed batches that fail their checksum."""
        path = self.path
        remove_stale_temporaries(path)
        self.manifest = {k: v for k, v in read_json(os.path.join(path, MANIFEST)).items() if k != "num_batches"}
        self.commit_every = 16
        self.specs = array_specs(self.manifest)
        if CHECKSUMS not in self.specs:
            raise StoreDamagedError(f"{path} has no batch checksums (written by an older lpld): damaged batches "
                                    f"cannot be told apart. Regenerate the store with relabel --overwrite.")
        try:
            self.committed = int(read_json(os.path.join(path, PROGRESS))["committed"])
        except (StoreDamagedError, KeyError, ValueError, TypeError):
            self.committed = 0  # nothing is known to be complete: generation restarts
            atomic_json_dump({"committed": 0}, os.path.join(path, PROGRESS))
        self.next_id = self.committed
        for name, (shape, dtype) in self.specs.items():
            file = os.path.join(path, name + ".npy")
            try:
                offset = header_offsets(path, {name: (shape, dtype)})[name]
            except StoreDamagedError:
                offset = None
            row = int(np.prod(shape[1:])) * dtype.itemsize
            if offset is None:
                if os.path.isfile(file) and os.path.getsize(file) >= 128:  # keep a readable header
                    with open(file, "rb") as f:
                        try:
                            np.lib.format.read_magic(f)
                            np.lib.format.read_array_header_1_0(f)
                            offset = f.tell()
                        except ValueError:
                            offset = None
                if offset is None:
                    arr = np.lib.format.open_memmap(file, mode="w+", dtype=dtype, shape=shape)
                    offset, first_bad_row = arr.offset, 0
                    del arr
                else:
                    first_bad_row = max(0, (os.path.getsize(file) - offset) // row)
                    os.truncate(file, offset + int(np.prod(shape)) * dtype.itemsize)
                arr = np.memmap(file, dtype=dtype, mode="r+", offset=offset, shape=shape)
                arr[first_bad_row:] = -1 if name in PADDED else 0
                arr.flush()
                del arr
        offsets = header_offsets(path, self.specs)
        self._maps = {name: np.memmap(os.path.join(path, name + ".npy"), dtype=dtype, mode="r+",
                                      offset=offsets[name], shape=shape)
                      for name, (shape, dtype) in self.specs.items()}
        self.damaged = damaged_batches(self._maps, range(self.committed))

    def _open(self, manifest, resume, overwrite, commit_every, verify) -> None:
        path = self.path
        remove_stale_temporaries(os.path.dirname(os.path.abspath(path)), [os.path.basename(os.path.abspath(path))])
        remove_stale_temporaries(path)
        self.manifest = label_manifest({**manifest, "format": FORMAT_NAME, "format_version": FORMAT_VERSION,
                                        "checksums": "crc32"}, path)
        self.manifest.pop("num_batches", None)
        self.commit_every = max(1, int(commit_every))
        old = continued_manifest(path, self.manifest, MANIFEST, resume=resume, overwrite=overwrite)
        if old is not None:  # an older store keeps its layout (no checksums array) and gains the binding keys
            self.manifest = old
            for key in BINDING_KEYS + ("classes",):
                self.manifest.setdefault(key, None)
        else:
            self._create()
        self.specs = array_specs(self.manifest)
        offsets = header_offsets(path, self.specs)
        self.committed = int(read_json(os.path.join(path, PROGRESS))["committed"])
        self.next_id = self.committed
        for name, (shape, dtype) in self.specs.items():  # stores made before space was reserved
            reserve_file(os.path.join(path, name + ".npy"), offsets[name] + int(np.prod(shape)) * dtype.itemsize,
                         "label store")
        self._maps = {name: np.memmap(os.path.join(path, name + ".npy"), dtype=dtype, mode="r+",
                                      offset=offsets[name], shape=shape)
                      for name, (shape, dtype) in self.specs.items()}
        if verify and self.committed and CHECKSUMS in self._maps:
            bad = damaged_batches(self._maps, range(self.committed))
            if bad:
                raise StoreDamagedError(f"{path}: {len(bad)} committed batch(es) do not match their checksums "
                                        f"(batches {describe_ids(bad)}); the store is damaged. {repair_hint(path)}")

    def _create(self) -> None:
        specs = array_specs(self.manifest)
        parent = os.path.dirname(os.path.abspath(self.path))
        needed = on_disk(parent, [int(np.prod(shape)) * dtype.itemsize + 128 for shape, dtype in specs.values()]
                         + [len(json.dumps(self.manifest, indent=2)) + 64, 64, 64])  # + manifest, progress, lock
        require_free_space(parent, needed, "label store")
        try:
            self._create_files(specs)
        except OSError as err:
            if not is_disk_full(err) or isinstance(err, DiskSpaceError):
                raise
            raise DiskSpaceError(err.errno, f"not enough disk space for the label store at {self.path}: it needs "
                                            f"{human_bytes(needed)} ({needed:,} bytes) on disk, "
                                            f"{human_bytes(free_bytes(parent))} are free. Free some space or choose "
                                            f"another output directory.") from err

    def _create_files(self, specs) -> None:
        # progress and manifest last: a reader (and a resumed writer) sees a store only once its
        # arrays are all there; an existing (empty or our) folder is kept with its owner and mode
        with atomic_dir(self.path, owned=is_our_label_store, last=(PROGRESS, MANIFEST), what="label store") as tmp:
            for name, (shape, dtype) in specs.items():
                file = os.path.join(tmp, name + ".npy")
                arr = np.lib.format.open_memmap(file, mode="w+", dtype=dtype, shape=shape)
                offset = arr.offset
                del arr
                reserve_file(file, offset + int(np.prod(shape)) * dtype.itemsize, "label store")
                if name in PADDED:
                    arr = np.lib.format.open_memmap(file, mode="r+")
                    arr[...] = -1  # padding of short batches is recognisable
                    arr.flush()
                    del arr
            atomic_json_dump(self.manifest, os.path.join(tmp, MANIFEST))
            atomic_json_dump({"committed": 0}, os.path.join(tmp, PROGRESS))

    def _fill(self, record: BatchRecord) -> None:
        k, n = record.batch_id, record.batch_size
        m = self._maps
        m["batch_sizes"][k] = n
        self._fill_labels(k, n, record)
        if "aug_digest" in m:
            m["aug_digest"][k] = np.frombuffer(augmentation_digest(record), dtype=np.uint8)
        else:
            m["image_indices"][k, :n] = record.image_indices.numpy()
            m["crops"][k, :n] = record.crops.numpy()
            if "flips" in m:
                m["flips"][k, :n] = record.flips.numpy()
            if "cutout" in m:
                m["cutout"][k, :n] = record.cutout.numpy()
            if "mix_index" in m:
                m["mix_index"][k, :n] = record.mix_index.numpy()
                m["mix_lam"][k] = record.mix_lam
            if "mix_bbox" in m:
                m["mix_bbox"][k] = np.asarray(record.mix_bbox, dtype=np.int64)
        if CHECKSUMS in m:
            m[CHECKSUMS][k] = batch_checksum(m, k)

    def _fill_labels(self, k: int, n: int, record: BatchRecord) -> None:
        """Full logits as they are; for a top-k store the record's top-k pair, or the top k of its
        full logits (ranked in their own precision, before any cast)."""
        m, classes, topk = self._maps, int(self.manifest["num_classes"]), self.manifest.get("label_topk")
        logits = None if record.logits is None else record.logits.detach().cpu()
        if topk is None:
            if logits is None or record.topk_indices is not None or tuple(logits.shape) != (n, classes):
                raise ValueError(f"batch {k}: logits must be [{n}, {classes}] (this store holds full labels)")
            m["logits"][k, :n] = logits.numpy().astype(m["logits"].dtype)
            return
        if logits is not None and record.topk_indices is None and tuple(logits.shape) == (n, classes):
            values, indices = select_topk(logits, int(topk), values_dtype=logits.dtype)
        elif logits is not None and record.topk_indices is not None and tuple(logits.shape) == (n, int(topk)):
            values, indices = logits, record.topk_indices.detach().cpu()
        else:
            raise ValueError(f"batch {k}: need full logits [{n}, {classes}] or top-{topk} values and indices "
                             f"[{n}, {topk}]; got {None if logits is None else tuple(logits.shape)}")
        m["topk_indices"][k, :n] = indices.numpy().astype(m["topk_indices"].dtype)
        if "topk_codes" in m:
            coded = encode_uint8(values)
            m["topk_codes"][k, :n] = coded.codes.numpy()
            m["topk_row_max"][k, :n] = coded.row_max.numpy()
            m["topk_row_min"][k, :n] = coded.row_min.numpy()
        else:
            m["topk_values"][k, :n] = values.float().numpy().astype(m["topk_values"].dtype)

    def write(self, record: BatchRecord) -> None:
        self.check_next(record.batch_id)
        self._fill(record)
        self.next_id += 1
        if self.next_id - self.committed >= self.commit_every or self.done:
            self.commit()

    def rewrite(self, record: BatchRecord) -> None:
        """Replace a committed batch (repair): the row is reset to its initial state, then written."""
        k = record.batch_id
        if not 0 <= k < self.committed:
            raise ValueError(f"batch {k} is not committed in {self.path}; only committed batches are rewritten")
        for name, arr in self._maps.items():
            if name != CHECKSUMS:
                arr[k] = -1 if name in PADDED else 0
        self._fill(record)
        for arr in self._maps.values():
            arr.flush()

    def commit(self) -> None:
        """Make every written batch durable, then publish the new count (the order matters)."""
        if self.next_id == self.committed:
            return
        for arr in self._maps.values():
            arr.flush()
        atomic_json_dump({"committed": self.next_id}, os.path.join(self.path, PROGRESS))
        self.committed = self.next_id

    def close(self) -> None:
        try:
            if getattr(self, "_maps", None):
                self.commit()
        finally:
            self._maps = {}
            self._lock.release()

    def __enter__(self) -> "LabelStoreWriter":
        return self

    def __exit__(self, exc_type, *exc) -> None:
        # next_id only counts batches whose every array was written, so committing them is safe
        # even when an error interrupted the following batch half-way
        self.close()
