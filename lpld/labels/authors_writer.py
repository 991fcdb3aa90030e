"""The writer of the authors' FKD label layout (:mod:`lpld.labels.authors` describes and reads it):
one atomic ``torch.save`` per batch, its sha256 appended to ``lpld_checksums.tsv``, the sampler json
written on close; resumable from the batch files present, and repairable in place."""
from __future__ import annotations

import hashlib
import json
import os
from typing import Any, Iterable

import numpy as np

from ..augment import BatchRecord
from ..utils.errors import UnsafeFileError
from ..utils.io import atomic_json_dump, atomic_path, atomic_torch_save, atomic_write_text, on_disk
from ..utils.io import remove_stale_temporaries, require_free_space
from ..utils.lock import lock_output
from ..utils.owner import clear_dir, entries
from .authors import (CHECKSUMS, EPOCH_DIR, META, SAMPLER_JSON, batch_file, describe_files, load_batch_file,
                      missing_batch_files, missing_batch_ids, present_batches, read_checksums)
from .common import (FORMAT_NAME, FORMAT_VERSION, OrderedBatchWriter, StoreDamagedError, continued_manifest,
                     is_our_label_store, repair_command)
from .sampler_index import parse_sampler_json


class AuthorsStoreWriter(OrderedBatchWriter):
    """Write batches in the authors' layout, one atomic ``torch.save`` per batch.

    Resumable: the batch files present (each complete, thanks to the atomic rename, and verified
    against ``lpld_checksums.tsv`` when resuming) are the progress; the sampler json is written by
    :meth:`close`. The writer holds the store's lock (``.<store>.lpld.lock`` beside it)."""

    def __init__(self, path: str, manifest: dict[str, Any] | None, *, resume: bool = True,
                 overwrite: bool = False, commit_every: int = 16, verify: bool = True, repair: bool = False) -> None:
        self.path = path
        self._lock = lock_output(path, "label store", beside=True)
        try:
            if repair:
                self._open_for_repair()
            else:
                self._open(manifest, resume, overwrite, verify)
        except BaseException:
            self._lock.release()
            raise

    def _open_for_repair(self) -> None:
        """Open a damaged folder in place; :attr:`damaged` lists the batches to regenerate: missing
        files before the last present one, and files that fail their checksum or do not load."""
        path = self.path
        meta_path = os.path.join(path, META)
        if not os.path.isfile(meta_path):
            raise StoreDamagedError(f"{path} has no {META} (the authors' release): its settings are unknown, so "
                                    f"damaged batches cannot be regenerated. Download the label archive again.")
        with open(meta_path) as f:
            self.manifest = {k: v for k, v in json.load(f).items() if k != "num_batches"}
        self.per_epoch = int(self.manifest["batches_per_epoch"])
        for d in [path] + [os.path.join(path, e) for e in os.listdir(path) if EPOCH_DIR.match(e)]:
            remove_stale_temporaries(d)
        self._checksums = read_checksums(path)
        self._indices = {}
        missing = missing_batch_ids(path, self.per_epoch)
        present_top = max((e * self.per_epoch + b for e, idx in present_batches(path).items() for b in idx), default=-1)
        self.damaged = sorted(set(missing) | set(self._damaged(g for g in range(present_top + 1) if g not in missing)))
        self.next_id = present_top + 1
        self.committed = self.next_id

    def _open(self, manifest, resume, overwrite, verify) -> None:
        path = self.path
        remove_stale_temporaries(os.path.dirname(os.path.abspath(path)), [os.path.basename(os.path.abspath(path))])
        self.manifest = {**manifest, "format": FORMAT_NAME + "/authors", "format_version": FORMAT_VERSION}
        self.manifest.pop("num_batches", None)
        self.per_epoch = int(manifest["batches_per_epoch"])
        meta_path = os.path.join(path, META)
        old = continued_manifest(path, self.manifest, META, resume=resume, overwrite=overwrite)
        if old is not None:
            self.manifest = old
        elif entries(path):  # the folder stays (its owner, group and mode); only its content goes
            clear_dir(path, is_our_label_store, "label store")
        parent = os.path.dirname(os.path.abspath(path))
        todo = max(0, self.planned - self._count_done())
        require_free_space(parent, on_disk(parent, [self._batch_bytes()] * todo + [4096] * 5 +
                                           [16 * int(self.manifest["batch_size"]) * todo, 80 * todo]), "label store")
        os.makedirs(path, exist_ok=True)
        for d in [path] + [os.path.join(path, e) for e in os.listdir(path) if EPOCH_DIR.match(e)]:
            remove_stale_temporaries(d)
        atomic_json_dump(self.manifest, meta_path)
        missing = missing_batch_files(path, self.per_epoch)
        if missing:
            raise StoreDamagedError(f"{path} is missing batch file(s) that later ones follow: "
                                    f"{describe_files(missing)}. Regenerate them with {repair_command(path)}")
        self.next_id = self._count_done()
        self.committed = self.next_id
        self._checksums = read_checksums(path)
        if verify and self.next_id:
            bad = self._damaged(range(self.next_id))
            if bad:
                raise StoreDamagedError(f"{path}: {len(bad)} batch file(s) are damaged "
                                        f"({describe_files([batch_file(path, *divmod(g, self.per_epoch)) for g in bad])}). "
                                        f"Regenerate them with {repair_command(path)}")
        self._write_checksums()  # cleanly: a line torn by a kill would corrupt the next one
        self._indices: dict[int, np.ndarray] = {}  # int32 per batch: 8x smaller than lists of ints

    def _write_checksums(self) -> None:
        atomic_write_text(os.path.join(self.path, CHECKSUMS),
                          "".join(f"{g}\t{self._checksums[g]}\n" for g in sorted(self._checksums) if g < self.next_id))

    def _batch_bytes(self) -> int:
        """Upper estimate of one batch file (tensors plus the archive's overhead)."""
        m = self.manifest
        b, c = int(m["batch_size"]), int(m["num_classes"])
        logit = 2 if m.get("logits_dtype", "float16") == "float16" else 4
        return b * c * logit + b * (16 + 28 + 8) + 4096

    def _damaged(self, gids: Iterable[int]) -> list[int]:
        bad = []
        for gid in gids:
            file = batch_file(self.path, *divmod(gid, self.per_epoch))
            try:
                with open(file, "rb") as f:
                    data = f.read()
                recorded = self._checksums.get(gid)
                if recorded is not None:
                    if hashlib.sha256(data).hexdigest() != recorded:
                        bad.append(gid)
                        continue
                else:
                    load_batch_file(file, data)
                    self._checksums[gid] = hashlib.sha256(data).hexdigest()
            except (OSError, StoreDamagedError, UnsafeFileError):
                bad.append(gid)
        return bad

    def _count_done(self) -> int:
        n = 0
        while n < self.planned and os.path.isfile(batch_file(self.path, *divmod(n, self.per_epoch))):
            n += 1
        return n

    def _save(self, record: BatchRecord) -> str:
        epoch, index = divmod(record.batch_id, self.per_epoch)
        os.makedirs(os.path.join(self.path, f"epoch_{epoch}"), exist_ok=True)
        second = record.flips if record.cutout is None else record.cutout
        bbox = None if record.mix_bbox is None else [int(v) for v in record.mix_bbox]
        lam = None if record.mix_lam is None else float(record.mix_lam)
        logits = record.logits.detach().cpu()
        if self.manifest.get("logits_dtype", "float16") == "float16":
            logits = logits.half()
        digest = atomic_torch_save([record.crops.float().contiguous(), second.contiguous(), record.mix_index, lam,
                                  bbox, logits.contiguous()], batch_file(self.path, epoch, index))
        self._checksums[record.batch_id] = digest
        with open(os.path.join(self.path, CHECKSUMS), "a") as f:
            f.write(f"{record.batch_id}\t{digest}\n")
        return digest

    def write(self, record: BatchRecord) -> None:
        self.check_next(record.batch_id)
        self._save(record)
        self._indices[record.batch_id] = record.image_indices.numpy().astype(np.int32)
        self.next_id += 1
        self.committed = self.next_id

    def rewrite(self, record: BatchRecord) -> None:
        """Replace a damaged or missing batch file below the written count (repair)."""
        if not 0 <= record.batch_id < self.planned:
            raise ValueError(f"batch {record.batch_id} is outside the plan of {self.path}")
        self._save(record)

    def commit(self) -> None:
        pass  # every batch file is committed by its atomic rename

    def close(self, epoch_orders=None) -> None:
        """Write ``sampler_indices_epoch.json`` for the batches present and release the lock.
        Batches written by an earlier (interrupted) run take their images from ``epoch_orders``
        (the full sampler order of each epoch: lists or arrays) or from the json that run left. The
        json is written one epoch at a time, byte for byte what ``json.dumps`` of the lists gives."""
        try:
            self._write_sampler_json(epoch_orders)
            self._write_checksums()  # in batch order, also after a repair
        finally:
            self._lock.release()

    def _write_sampler_json(self, epoch_orders) -> None:
        bs = int(self.manifest["batch_size"])
        sampler = os.path.join(self.path, SAMPLER_JSON)
        old = parse_sampler_json(sampler) if os.path.isfile(sampler) else {}
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
