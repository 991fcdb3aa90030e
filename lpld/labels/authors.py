"""The authors' FKD label layout (``generate_soft_label_pruning.py`` / ``utils_fkd.py``)::

    <fkd_path>/epoch_{e}/batch_{b}.tar     torch.save([coords, flip_or_cutout, mix_index, mix_lam, mix_bbox, logits])
    <fkd_path>/sampler_indices_epoch.json  {"<epoch>": [image indices of every generated batch, in order]}

``coords`` float32 [B, 4]; ``flip_or_cutout`` bool [B] (ImageNet-21K-P: Cutout float32 [B, 7]);
``mix_index`` int64 [B] or None; ``mix_lam`` float or None; ``mix_bbox`` [x1, y1, x2, y2] or None;
``logits`` float16 with ``--use-fp16`` (float32 otherwise) [B, classes]. Batch ``b`` of epoch
``e`` is global batch ``e * batches_per_epoch + b`` and holds the images
``json[e][b * B:(b + 1) * B]``.

We write the bbox as Python ints (the authors' are numpy int64, which ``torch.load(weights_only=True)``
refuses; our reader allow-lists them, :mod:`lpld.utils.safe_load`); both load in their code and
ours. Our metadata goes to ``lpld_manifest.json`` beside the epoch folders (their loader ignores
it), and the sha256 of every batch file we write to
``lpld_checksums.tsv`` (one ``<batch id>\t<sha256>`` line per file, appended as each is renamed into
place); a read verifies its file against it. A missing batch file with later ones present, or
fewer files than the manifest plans, is reported by name: never read as a shorter store. The
sampler json is read through a memory-mapped index (:mod:`lpld.labels.sampler_index`); the writer
is :mod:`lpld.labels.authors_writer`.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import re
from typing import Any, Iterable

import torch

from ..augment import BatchRecord
from ..utils.errors import UnsafeFileError
from ..utils.safe_load import safe_torch_load
from .common import (FORMAT_VERSION, StoreDamagedError, StoreMismatchError, check_manifest_counts, repair_command,
                     warn_once)
from .sampler_index import SamplerIndex, default_index_dir, sampler_damaged

SAMPLER_JSON = "sampler_indices_epoch.json"
META = "lpld_manifest.json"
CHECKSUMS = "lpld_checksums.tsv"
EPOCH_DIR = re.compile(r"^epoch_(\d+)$")
BATCH_FILE = re.compile(r"^batch_(\d+)\.tar$")


def batch_file(root: str, epoch: int, index: int) -> str:
    return os.path.join(root, f"epoch_{epoch}", f"batch_{index}.tar")


def is_authors_store(path: str) -> bool:
    return os.path.isdir(os.path.join(path, "epoch_0"))


def load_batch_file(path: str, data: bytes | None = None) -> list:
    """Read a batch file (or its bytes, ``data``) with :func:`lpld.utils.safe_load.safe_torch_load`,
    whose allow-list holds the authors' numpy scalars; a file holding anything else raises
    :class:`~lpld.utils.errors.UnsafeFileError`, a damaged one :class:`StoreDamagedError`."""
    root = os.path.dirname(os.path.dirname(path))
    try:
        return safe_torch_load(io.BytesIO(data) if data is not None else path, what="soft-label batch", name=path,
                               fix=f"regenerate the labels ({repair_command(root)}) or download them again")
    except UnsafeFileError:
        raise
    except Exception as err:  # noqa: BLE001 - name the file
        raise StoreDamagedError(f"cannot read soft-label batch {path}: {err}. The file is damaged: regenerate it "
                                f"with {repair_command(root)}") from err


def read_checksums(root: str) -> dict[int, str]:
    """Batch id -> sha256 recorded in ``lpld_checksums.tsv`` (a torn last line is ignored)."""
    out: dict[int, str] = {}
    try:
        with open(os.path.join(root, CHECKSUMS)) as f:
            for line in f:
                parts = line.split()
                if len(parts) == 2 and len(parts[1]) == 64 and parts[0].isdigit():
                    out[int(parts[0])] = parts[1]
    except FileNotFoundError:
        pass
    return out


def present_batches(root: str) -> dict[int, set[int]]:
    """Epoch -> batch indices whose files exist."""
    out: dict[int, set[int]] = {}
    for d in os.listdir(root):
        m = EPOCH_DIR.match(d)
        if m and os.path.isdir(os.path.join(root, d)):
            out[int(m.group(1))] = {int(b.group(1)) for f in os.listdir(os.path.join(root, d)) if (b := BATCH_FILE.match(f))}
    return out


def missing_batch_ids(root: str, per_epoch: int, planned: int | None = None) -> list[int]:
    """Ids of batches whose file must exist but does not: gaps before a later file, and (with
    ``planned``) the files short of the planned count."""
    present = present_batches(root)
    last = max((e * per_epoch + b for e, idx in present.items() for b in idx), default=-1)
    if planned is not None:
        last = max(last, planned - 1)
    return [g for g in range(last + 1) if g % per_epoch not in present.get(g // per_epoch, ())]


def missing_batch_files(root: str, per_epoch: int, planned: int | None = None) -> list[str]:
    return [batch_file(root, *divmod(g, per_epoch)) for g in missing_batch_ids(root, per_epoch, planned)]


def describe_files(files: list[str], limit: int = 6) -> str:
    names = [os.path.join(os.path.basename(os.path.dirname(f)), os.path.basename(f)) for f in files]
    return ", ".join(names[:limit]) + (f", ... ({len(names)} in all)" if len(names) > limit else "")


def _count_batches(epoch_dir: str) -> int:
    """Number of consecutive batch files 0..n-1 in an epoch folder."""
    present = {int(m.group(1)) for f in os.listdir(epoch_dir) if (m := BATCH_FILE.match(f))}
    n = 0
    while n in present:
        n += 1
    return n


def read_side_manifest(path: str) -> dict[str, Any]:
    """Our ``lpld_manifest.json`` beside the authors' or LPQLD files ({} when absent: their release
    has none); unreadable, or with a count that is zero, negative or not an integer, it is damaged."""
    if not os.path.isfile(path):
        return {}
    try:
        with open(path) as f:
            meta = json.load(f)
    except (OSError, ValueError) as err:
        raise StoreDamagedError(f"cannot read {path}: {err}. Regenerate the labels or download them again.") from err
    check_manifest_counts(meta, path, required=())
    return meta


def record_from_entries(batch_id: int, image_indices: torch.Tensor, coords, second, mix_index, lam, bbox,
                        logits) -> BatchRecord:
    """A :class:`BatchRecord` from the entries of one of their batch files (LPLD's and LPQLD's share
    them): crops, flips (or, for ImageNet-21K-P, Cutout boxes), the mix partner, lambda and box."""
    rec = BatchRecord(batch_id=batch_id, image_indices=image_indices, crops=coords.float(), logits=logits)
    if second.dtype == torch.bool:
        rec.flips = second
    else:
        rec.cutout = second.float()
    if mix_index is not None:
        rec.mix_index = mix_index.long()
        rec.mix_lam = float(lam)
        rec.mix_bbox = None if bbox is None else tuple(int(v) for v in bbox)
    return rec


class AuthorsLabelStore:
    """Read the authors' layout (theirs or one we wrote) through the same API as :class:`LabelStore`."""

    format = "authors"

    def __init__(self, path: str, batches_per_epoch: int | None = None, index_dir: str | None = None) -> None:
        self.path = path
        if not is_authors_store(path):
            raise FileNotFoundError(f"{path}: no epoch_0/ folder; not an FKD soft-label folder")
        meta_path = os.path.join(path, META)
        meta: dict[str, Any] = read_side_manifest(meta_path)
        epochs = sorted(int(m.group(1)) for d in os.listdir(path) if (m := EPOCH_DIR.match(d))
                        and os.path.isdir(os.path.join(path, d)))
        counts = []
        for e in range(len(epochs)):
            if e not in epochs:
                break
            counts.append(_count_batches(os.path.join(path, f"epoch_{e}")))
        present = present_batches(path)
        per_epoch = batches_per_epoch or meta.get("batches_per_epoch") or (max(present.get(0, {-1})) + 1)
        if per_epoch <= 0:
            raise StoreDamagedError(f"{path}/epoch_0 holds no batch_0.tar")
        planned = meta.get("planned_batches")
        missing = missing_batch_files(path, int(per_epoch))
        if missing:
            raise StoreDamagedError(
                f"soft-label folder {path} is missing {len(missing)} batch file(s) that later ones follow: "
                f"{describe_files(missing)}. Regenerate them ({repair_command(path)}) or download the complete "
                f"label archive again.")
        self.missing_planned = missing_batch_files(path, int(per_epoch), planned) if planned else []
        self._checksums = read_checksums(path)
        read_counts = []  # batch files read per epoch: a store is read up to its first incomplete epoch
        for c in counts:
            read_counts.append(min(c, per_epoch))
            if c < per_epoch:
                break
        total = sum(read_counts)
        sampler = os.path.join(path, SAMPLER_JSON)
        if not os.path.isfile(sampler):
            raise FileNotFoundError(f"{sampler} is missing: the label generation did not finish. Rerun it "
                                    f"(it resumes) or download the complete label archive.")
        self._index = SamplerIndex.open(sampler, index_dir or default_index_dir())
        first = load_batch_file(batch_file(path, 0, 0))  # its checksum is verified when it is read
        self.batch_size = int(first[0].shape[0])
        self.num_classes = int(first[5].shape[1])
        self._check_sampler_covers(sampler, read_counts)
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
        self.planned = int(planned) if planned else None
        if not meta.get("images_sha256"):
            warn_once(path, "checksums", f"soft-label folder {path} records no content hashes (the authors' release "
                                         f"or an older lpld): its images and teacher cannot be verified")

    def _check_sampler_covers(self, sampler: str, read_counts: list[int]) -> None:
        """The json must list the images of every batch file read: the authors' generator appends
        each written batch's indices, so a json that lists fewer (a copy cut at a list boundary is
        still valid JSON) is damaged. Read as it is, it would silently be a shorter run."""
        b = self.batch_size
        for epoch, files in enumerate(read_counts):
            listed = self._index.length(epoch) if epoch in self._index else 0
            if -(-listed // b) < files:
                have = f"lists {listed} image indices ({-(-listed // b)} batches of {b})" if epoch in self._index \
                    else "has no entry"
                raise sampler_damaged(sampler, f"{have} for epoch {epoch}, but epoch_{epoch}/ holds {files} batch "
                                                f"files (the json is cut short or belongs to another run)")

    def incomplete_reason(self) -> str:
        """'' for a complete store; otherwise what is missing (our manifest plans the batch count)."""
        if self.planned is None or self.num_batches >= self.planned:
            return ""
        return (f"it holds {self.num_batches} of the {self.planned} planned batches (missing "
                f"{describe_files(self.missing_planned) or SAMPLER_JSON + ' entries'})")

    def _load(self, gid: int) -> list:
        file = batch_file(self.path, *divmod(gid, self.batches_per_epoch))
        try:
            with open(file, "rb") as f:
                data = f.read()
        except OSError as err:
            raise StoreDamagedError(f"cannot read soft-label batch {file}: {err.strerror}") from err
        recorded = self._checksums.get(gid)
        if recorded is not None and hashlib.sha256(data).hexdigest() != recorded:
            raise StoreDamagedError(f"{file} does not match its checksum in {CHECKSUMS}: the file is damaged. "
                                    f"Regenerate it with {repair_command(self.path)}")
        return load_batch_file(file, data)

    def verify(self, batch_ids: Iterable[int] | None = None) -> list[int]:
        """Ids of stored batches whose file fails its checksum or does not load."""
        bad = []
        for gid in (range(self.num_batches) if batch_ids is None else batch_ids):
            try:
                self._load(gid)
            except (StoreDamagedError, UnsafeFileError):  # a refused file is regenerated like a damaged one
                bad.append(gid)
        return bad

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
        coords, second, mix_index, lam, bbox, logits = self._load(batch_id)
        rec = record_from_entries(batch_id, self._image_indices(epoch, index), coords, second, mix_index, lam,
                                  bbox, logits)
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
