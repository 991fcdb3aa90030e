"""The LPQLD label layout (``generate_soft_label_pruning_batch.py``, 341-459): flat per-batch files::

    <fkd_path>/batch_{i}.tar                 torch.save(list), i = global batch id 0, 1, 2, ...
    <fkd_path>/sampler_indices_batch.json    {"<i>": [image indices of batch i, in order]}

Each file holds, with ``--label_quantization MR-k`` (lines 429-436)::

    [coords float16 [B, 4], flip bool [B] | cutout float32 [B, 7],
     mix_index uint8 [B] | None, mix_lam float | None, mix_bbox [4 x uint8 scalar tensor] | None,
     values float16 [B, k], indices int16 [B, k]]

and without quantization the same minus ``indices`` with full ``[B, classes]`` logits
(lines 437-444). ``coords`` are LPLD's crop fractions (top/H, left/W, height/H, width/W) in fp16
(line 419): rounding ``fraction * side`` recovers the integer pixel box for images under ~1,000
px, which is how both their replay (PIL rounds the box) and ours read them. The batch ids run on
across epochs (``batch_counter``, line 448) and every epoch holds the same number of batches, so
id = epoch * batches_per_epoch + index, the id of our stores. Top-k files do not record the class
count: it comes from ``num_classes`` or from our ``lpld_manifest.json`` beside the files (which
their loader ignores: it reads only ``batch_*.tar`` and the json, ``utils_fkd.py`` 184-206).

RandAugment files (``--use_rand_aug``: an extra parameter list after the flips) are not supported.
"""
from __future__ import annotations

import json
import os
import re
from typing import Any

import torch

from ..augment import BatchRecord
from ..utils.io import atomic_json_dump, atomic_torch_save, atomic_write_text
from ..utils.owner import clear_dir, entries
from .authors import load_batch_file, read_side_manifest, record_from_entries
from .common import (FORMAT_NAME, FORMAT_VERSION, OrderedBatchWriter, StoreDamagedError, StoreMismatchError,
                     continued_manifest, is_our_label_store)
from .topk import check_topk, check_topk_pair, index_dtype

SAMPLER_JSON = "sampler_indices_batch.json"
META = "lpld_manifest.json"
_BATCH = re.compile(r"^batch_(\d+)\.tar$")
UINT8_LIMIT = 255  # mix partners and CutMix box corners are stored as uint8


def batch_file(root: str, batch_id: int) -> str:
    return os.path.join(root, f"batch_{batch_id}.tar")


def is_lpqld_store(path: str) -> bool:
    """A flat LPQLD folder: its sampler json or ``batch_0.tar`` at the top level."""
    return os.path.isfile(os.path.join(path, SAMPLER_JSON)) or os.path.isfile(batch_file(path, 0))


def infer_batches_per_epoch(orders: list[list[int]]) -> int:
    """Batches per relabel epoch from the batches' image lists: the first batch that repeats an
    image of the batches before it starts epoch 1. Exact for the authors' sampler: an epoch is a
    permutation of all images, so epoch 1's first batch (B images) cannot avoid the epoch-0 images
    (all but fewer than B with ``drop_last``)."""
    seen: set[int] = set()
    for b, images in enumerate(orders):
        if seen.intersection(images):
            return b
        seen.update(images)
    return len(orders)


def _layout(entries: list, file: str) -> str:
    """``topk`` (7 entries ending with integer indices) or ``full`` (6 entries)."""
    if not isinstance(entries, (list, tuple)):
        raise ValueError(f"{file}: not an LPQLD label batch (a list of tensors expected, got {type(entries).__name__})")
    if len(entries) >= 3 and isinstance(entries[2], (list, tuple)):
        raise ValueError(f"{file}: RandAugment labels (--use_rand_aug) are not supported; regenerate without it")
    if len(entries) == 7 and isinstance(entries[6], torch.Tensor) and not entries[6].is_floating_point():
        return "topk"
    if len(entries) == 6 and isinstance(entries[5], torch.Tensor) and entries[5].is_floating_point():
        return "full"
    raise ValueError(f"{file}: {len(entries)} entries; expected the LPQLD layout [coords, flip|cutout, "
                     f"mix_index, mix_lam, mix_bbox, logits(, topk indices)]")


def read_batch_orders(sampler: str) -> dict[int, list[int]]:
    """``sampler_indices_batch.json`` as ``{batch id: [image indices]}``; a file that is not JSON (cut
    mid-list), or a key or index that is not an integer (``"7"``, ``2.5``), is a
    :class:`StoreDamagedError` naming the file (``int()`` would accept both silently)."""
    def damaged(what: str) -> StoreDamagedError:
        return StoreDamagedError(f"{sampler}: {what}; the file is damaged (an interrupted copy or download?). "
                                 f"Download the label archive again, or regenerate the labels")
    try:
        with open(sampler, "rb") as f:
            raw = json.loads(f.read())
    except ValueError as err:  # invalid JSON, or bytes that are not UTF-8
        raise damaged(f"is not valid JSON ({err})") from None
    if not isinstance(raw, dict):
        raise damaged(f"holds a JSON {type(raw).__name__}, not {{\"<batch>\": [image indices]}}")
    orders: dict[int, list[int]] = {}
    for key, values in raw.items():
        if not key.isdigit():
            raise damaged(f"key {key!r} is not a batch number")
        if not isinstance(values, list):
            raise damaged(f"batch {key} maps to a {type(values).__name__}, not a list of image indices")
        bad = [v for v in values if isinstance(v, bool) or not isinstance(v, int) or v < 0]
        if bad:
            raise damaged(f"batch {key} lists {bad[0]!r}, which is not an image index (an integer >= 0)")
        orders[int(key)] = values
    return orders


class LPQLDLabelStore:
    """Read the flat LPQLD layout (theirs or one we wrote) through the API of :class:`LabelStore`.

    ``read(batch_id)`` gives a :class:`BatchRecord` whose ``logits`` are the stored values ([B, k]
    for top-k files, fp16 as stored) and ``topk_indices`` the stored class indices (int16)."""

    format = "lpqld"

    def __init__(self, path: str, num_classes: int | None = None, batches_per_epoch: int | None = None) -> None:
        self.path = path
        if not os.path.isdir(path):
            raise FileNotFoundError(f"soft-label folder not found: {path}")
        sampler = os.path.join(path, SAMPLER_JSON)
        if not os.path.isfile(sampler):
            raise FileNotFoundError(f"{sampler} is missing: the label generation did not finish (it is written "
                                    f"last). Rerun it or download the complete label archive.")
        orders = read_batch_orders(sampler)
        n = len(orders)
        if n == 0 or sorted(orders) != list(range(n)):
            gap = next((i for i in range(n + 1) if i not in orders), n)
            raise StoreDamagedError(f"{sampler} must list batches 0..{max(n - 1, 0)}; batch {gap} is not listed. "
                                    f"The file is damaged: download the label archive again")
        present = {int(m.group(1)) for f in os.listdir(path) if (m := _BATCH.match(f))}
        missing = [i for i in range(n) if i not in present]
        if missing:
            raise FileNotFoundError(f"{batch_file(path, missing[0])} is missing ({len(missing)} of the {n} batches "
                                    f"listed in {SAMPLER_JSON} are absent); re-download the label archive")
        beyond = sorted(i for i in present if i >= n)
        if beyond:  # their generator lists every batch it writes: a shorter json is cut or stale
            raise StoreDamagedError(f"{sampler} lists {n} batches, but {path} also holds batch_{beyond[0]}.tar"
                                    f"{f' .. batch_{beyond[-1]}.tar' if len(beyond) > 1 else ''}: the json is cut "
                                    f"short or the generation did not finish. Rerun the generation (it resumes) or "
                                    f"download the label archive again")
        self._orders = [orders[i] for i in range(n)]
        meta: dict[str, Any] = read_side_manifest(os.path.join(path, META))
        first_file = batch_file(path, 0)
        first = load_batch_file(first_file)
        self.layout = _layout(first, first_file)
        self.batch_size = int(first[0].shape[0])
        values = first[5]
        if self.layout == "topk":
            self.label_topk = int(values.shape[1])
            classes = num_classes or meta.get("num_classes")
            if not classes:
                raise ValueError(f"{path} holds top-{self.label_topk} labels, which do not record the class "
                                 f"count; pass num_classes (ImageNet-1K 1000, Tiny-ImageNet 200, ImageNet-21K-P 10450)")
            self.num_classes = int(classes)
            check_topk(self.label_topk, self.num_classes, where=first_file)
            index_type = str(first[6].dtype).replace("torch.", "")
        else:
            self.label_topk, index_type = None, None
            self.num_classes = int(values.shape[1])
            if num_classes and int(num_classes) != self.num_classes:
                raise StoreMismatchError(f"{first_file} holds logits over {self.num_classes} classes, "
                                         f"not {num_classes}")
        self.num_batches = n
        per_epoch = batches_per_epoch or meta.get("batches_per_epoch") or infer_batches_per_epoch(self._orders)
        self.batches_per_epoch = int(per_epoch)
        mix = "none" if first[2] is None else ("mixup" if first[4] is None else "cutmix")
        self.manifest = {
            "format": "lpqld", "format_version": FORMAT_VERSION, "dataset": None, "teacher": None,
            "seed": None, "epochs": None, "prune_ratio": None, "num_images": None, "image_size": None,
            **meta,
            "batch_size": self.batch_size, "num_classes": self.num_classes, "num_batches": n,
            "batches_per_epoch": self.batches_per_epoch, "mix_type": mix, "cutout": first[1].dtype != torch.bool,
            "logits_dtype": str(values.dtype).replace("torch.", ""), "label_topk": self.label_topk,
            "topk_index_dtype": index_type,
        }
        self.manifest.setdefault("planned_batches", n)

    def __len__(self) -> int:
        return self.num_batches

    def read(self, batch_id: int) -> BatchRecord:
        if not 0 <= batch_id < self.num_batches:
            raise IndexError(f"batch {batch_id} is not in {self.path} (it holds batches 0..{self.num_batches - 1})")
        file = batch_file(self.path, batch_id)
        entries = load_batch_file(file)
        layout = _layout(entries, file)
        if layout != self.layout:
            raise StoreMismatchError(f"{file}: {layout} labels in a folder of {self.layout} labels")
        coords, second, mix_index, lam, bbox, values = entries[:6]
        rows = len(self._orders[batch_id])
        if coords.shape[0] != rows or values.shape[0] != rows:
            raise StoreMismatchError(f"{file}: {coords.shape[0]} crops and {values.shape[0]} label rows, but "
                                     f"{SAMPLER_JSON} lists {rows} images for it")
        rec = record_from_entries(batch_id, torch.tensor(self._orders[batch_id], dtype=torch.int64), coords, second,
                                  mix_index, lam, bbox, values)
        if layout == "topk":
            indices = entries[6]
            check_topk_pair(values, indices, self.num_classes, where=file)
            if values.shape[1] != self.label_topk:
                raise StoreMismatchError(f"{file}: top-{values.shape[1]} labels in a folder of top-{self.label_topk}")
            rec.topk_indices = indices
        elif values.shape[1] != self.num_classes:
            raise StoreMismatchError(f"{file}: logits over {values.shape[1]} classes, the folder's first "
                                     f"batch has {self.num_classes}")
        return rec

    def epoch_image_order(self, epoch: int) -> torch.Tensor:
        start = epoch * self.batches_per_epoch
        if epoch < 0 or start >= self.num_batches:
            raise IndexError(f"epoch {epoch} has no stored batch in {self.path}")
        stop = min(start + self.batches_per_epoch, self.num_batches)
        return torch.tensor([i for b in range(start, stop) for i in self._orders[b]], dtype=torch.int64)

    def max_image_index(self) -> int:
        return max((max(v) for v in self._orders if v), default=-1)

    def nbytes(self) -> int:
        return sum(os.path.getsize(os.path.join(self.path, f)) for f in os.listdir(self.path)
                   if os.path.isfile(os.path.join(self.path, f)))


class LPQLDStoreWriter(OrderedBatchWriter):
    """Write batches in the flat LPQLD layout, byte for byte the dtypes of their generator.

    ``manifest["label_topk"]``: k for top-k files (records carry ``topk_indices``), None for full
    logits. Every file appears by atomic rename; the sampler json is rewritten every
    ``commit_every`` batches and on :meth:`close`, and a resumed writer continues after the
    batches that are both on disk and listed there."""

    def __init__(self, path: str, manifest: dict[str, Any], *, resume: bool = True,
                 overwrite: bool = False, commit_every: int = 1024) -> None:
        self.path = path
        self.manifest = {**manifest, "format": FORMAT_NAME + "/lpqld", "format_version": FORMAT_VERSION}
        self.manifest.pop("num_batches", None)
        self.commit_every = max(1, int(commit_every))
        m = self.manifest
        self.num_classes = int(m["num_classes"])
        topk = m.get("label_topk")
        self.topk = None if topk is None else check_topk(topk, self.num_classes, where=path)
        if m.get("mix_type", "none") != "none" and int(m["batch_size"]) > UINT8_LIMIT + 1:
            raise ValueError(f"the LPQLD format stores mix partners as uint8: batch_size {m['batch_size']} > 256 "
                             f"cannot be written; use our format")
        if m.get("mix_type") == "cutmix" and int(m.get("image_size") or 0) > UINT8_LIMIT:
            raise ValueError(f"the LPQLD format stores CutMix boxes as uint8: image_size {m['image_size']} > 255 "
                             f"cannot be written; use our format")
        meta_path = os.path.join(path, META)
        self._orders: dict[int, list[int]] = {}
        if continued_manifest(path, m, META, resume=resume, overwrite=overwrite) is not None:
            self._orders = self._listed_orders()
        elif entries(path):  # the folder stays (its owner, group and mode); only its content goes
            clear_dir(path, is_our_label_store, "label store")
        os.makedirs(path, exist_ok=True)
        atomic_json_dump(self.manifest, meta_path)
        n = 0
        while n < self.planned and n in self._orders and os.path.isfile(batch_file(path, n)):
            n += 1
        self._orders = {i: v for i, v in self._orders.items() if i < n}
        self.next_id = self.committed = n

    def _listed_orders(self) -> dict[int, list[int]]:
        sampler = os.path.join(self.path, SAMPLER_JSON)
        if not os.path.isfile(sampler):
            return {}
        with open(sampler) as f:
            return {int(k): [int(i) for i in v] for k, v in json.load(f).items()}

    def write(self, record: BatchRecord) -> None:
        self.check_next(record.batch_id)
        n = record.batch_size
        if record.logits is None:
            raise ValueError(f"batch {record.batch_id}: no logits to write")
        if self.topk is None:
            if record.topk_indices is not None or tuple(record.logits.shape) != (n, self.num_classes):
                raise ValueError(f"batch {record.batch_id}: full logits [{n}, {self.num_classes}] expected "
                                 f"(this folder holds full labels)")
            entries_tail = [self._values(record.logits)]
        else:
            if record.topk_indices is None or tuple(record.logits.shape) != (n, self.topk):
                raise ValueError(f"batch {record.batch_id}: top-{self.topk} values and indices [{n}, {self.topk}] "
                                 f"expected; got logits {tuple(record.logits.shape)}")
            check_topk_pair(record.logits, record.topk_indices, self.num_classes, where=f"batch {record.batch_id}")
            entries_tail = [self._values(record.logits),
                            record.topk_indices.detach().cpu().to(index_dtype(self.num_classes)).contiguous()]
        second = record.flips if record.cutout is None else record.cutout.float()
        mix_index = None if record.mix_index is None else record.mix_index.to(torch.uint8)
        lam = None if record.mix_lam is None else float(record.mix_lam)
        bbox = None if record.mix_bbox is None else [torch.tensor(int(v), dtype=torch.uint8) for v in record.mix_bbox]
        atomic_torch_save([record.crops.half().contiguous(), second.contiguous(), mix_index, lam, bbox, *entries_tail],
                        batch_file(self.path, record.batch_id))
        self._orders[record.batch_id] = [int(i) for i in record.image_indices.tolist()]
        self.next_id += 1
        if self.next_id - self.committed >= self.commit_every or self.done:
            self.commit()

    def _values(self, logits: torch.Tensor) -> torch.Tensor:
        values = logits.detach().cpu()
        if self.manifest.get("logits_dtype", "float16") == "float16":
            values = values.half()
        return values.contiguous()

    def commit(self) -> None:
        """Publish the image lists of every batch written so far (their loader needs the json)."""
        atomic_write_text(os.path.join(self.path, SAMPLER_JSON),
                          json.dumps({str(i): self._orders[i] for i in range(self.next_id)}))
        self.committed = self.next_id

    def close(self) -> None:
        self.commit()

    def __enter__(self) -> "LPQLDStoreWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
