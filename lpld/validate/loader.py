"""Student-training data: one DataLoader item = one stored soft-label batch, images replayed.

* :class:`PlannedBatchSampler` yields, per training step, a :class:`BatchRequest` naming the stored
  batch id (from :class:`~lpld.validate.pruning.PruningPlan`) and this process's share of it.
* :class:`SoftLabelBatches` turns a request into a :class:`LabeledBatch`: it reads the record
  (soft logits + recorded crop/flip/Cutout/mix parameters) from the label store and cuts the
  recorded views (uint8) -- images and labels come from the same record and cannot come apart.
* :class:`BatchInputs` finishes the batch on the training device: normalise and mix, the rest of
  :func:`lpld.augment.replay_batch`, the function relabel used.
* Under torch.distributed each rank trains on a disjoint slice of every stored batch (the
  authors' DataParallel splits the batch across GPUs the same way). A rank replays only the
  images it needs: its slice plus the CutMix/MixUp partners of its slice.
"""
from __future__ import annotations

import dataclasses
import os
from typing import NamedTuple, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from ..augment import BatchRecord, apply_mix, normalize_views, views_uint8
from ..data import load_rgb
from ..labels import open_label_store
from ..labels.regen import image_sizes
from ..utils.runtime import to_channels_last
from .fetcher_patch import SoftLabelDataLoader, patched_worker_init
from .loss import TopkLabels
from .pruning import PruningPlan


class BatchRequest(NamedTuple):
    """What the batch sampler hands the fetcher: a stored batch, explicitly, and this rank's share."""
    batch_id: int
    rank: int = 0
    world_size: int = 1


class LabeledBatch(NamedTuple):
    """One training step's data as it leaves a DataLoader worker: uint8 views and fp16 logits, a
    quarter and a half of the float32 bytes. :meth:`BatchInputs.__call__` normalises and mixes
    them on the training device."""
    views: torch.Tensor | None   # uint8 [m, 3, S, S] recorded crops (+ flip / Cutout); None: cropped on the device
    record: BatchRecord          # the record of the m viewed images (mix parameters; no logits)
    keep: torch.Tensor           # int64 [b]: this rank's rows among the m mixed views
    soft_logits: torch.Tensor    # [b, K] teacher logits as stored (fp16)
    targets: torch.Tensor        # int64 [b] hard labels of the (unmixed) images, for train accuracy
    batch_id: torch.Tensor       # int64 scalar: the stored batch these came from
    image_indices: torch.Tensor  # int64 [b] distilled-image indices
    global_rows: int             # rows of the whole stored batch, over all ranks
    topk_indices: torch.Tensor | None = None  # [b, k] class indices of top-k labels (soft_logits: their values)


def rank_rows(batch_size: int, rank: int, world_size: int) -> np.ndarray:
    """Positions of ``rank``'s share of a batch (contiguous, sizes differ by at most one)."""
    return np.array_split(np.arange(batch_size), world_size)[rank]


def rank_subrecord(record: BatchRecord, rows: Sequence[int]) -> tuple[BatchRecord, list[int]]:
    """A record over only the images that ``rows`` need (themselves and their mix partners), with
    the mix permutation re-indexed, and the positions of ``rows`` in it. Mixing is row-wise (row i
    takes pixels from row ``mix_index[i]``), so the kept rows equal those of the full replay."""
    rows = [int(r) for r in rows]
    need = set(rows)
    if record.mix_index is not None:
        need |= {int(record.mix_index[r]) for r in rows}
    order = sorted(need)
    pos = {u: k for k, u in enumerate(order)}
    sel = torch.tensor(order, dtype=torch.int64)

    def take(t):
        return None if t is None else t[sel]

    mix = None
    if record.mix_index is not None:  # partners-only rows mix with themselves; they are dropped
        mix = torch.tensor([pos.get(int(record.mix_index[u]), k) for k, u in enumerate(order)],
                           dtype=torch.int64)
    sub = dataclasses.replace(record, image_indices=record.image_indices[sel], crops=record.crops[sel],
                              flips=take(record.flips), cutout=take(record.cutout), mix_index=mix,
                              logits=take(record.logits), topk_indices=take(record.topk_indices))
    return sub, [pos[r] for r in rows]


class SoftLabelBatches(Dataset):
    """Map-style dataset over the distilled images whose unit of loading is a stored batch.

    ``images``: a :class:`lpld.data.LabeledImages` (``.samples`` of (path, target)), indexed like
    the relabel run. ``label_dir``: the store, opened (pickled to each worker as a path and a few
    numbers: memory maps reopen per process) or its path (opened lazily in each process).
    ``views_on_device``: send only the records; :class:`BatchInputs` crops on the device.
    """

    lpld_soft_label_batches = True  # LabelBatchFetcher serves only datasets that say so

    def __init__(self, images, label_dir, image_size: int, mean, std, *, allow_getitems: bool = False,
                 cache_images: bool = False, views_on_device: bool = False) -> None:
        # One numpy array of encoded paths rather than a list of str: forked workers share its
        # pages, where Python objects would be copied page by page as reference counts change.
        self.paths = np.array([os.fsencode(p) for p, _ in images.samples])
        self.targets = torch.tensor([t for _, t in images.samples], dtype=torch.int64)
        self._store = None if isinstance(label_dir, (str, os.PathLike)) else label_dir
        self.label_dir = str(label_dir) if self._store is None else self._store.path
        self.image_size = image_size
        self.mean, self.std = mean, std
        self.allow_getitems = allow_getitems
        self.cache_images = cache_images
        self.views_on_device = views_on_device
        self._cache: dict[int, object] = {}

    @property
    def store(self):
        if self._store is None:
            self._store = open_label_store(self.label_dir)
            if getattr(self._store, "regenerated", False):  # its crops are drawn for these images
                self._store.attach_images(image_sizes([os.fsdecode(p) for p in self.paths]))
        return self._store

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_cache"] = {}
        return state

    def __len__(self) -> int:
        return len(self.paths)

    def image(self, index: int):
        if not self.cache_images:
            return load_rgb(os.fsdecode(self.paths[index]))
        img = self._cache.get(index)
        if img is None:  # decoded once per process; crops never modify the source image
            img = self._cache[index] = load_rgb(os.fsdecode(self.paths[index]))
        return img

    def load_request(self, request) -> LabeledBatch:
        if not isinstance(request, BatchRequest):
            raise TypeError(f"SoftLabelBatches loads BatchRequest items; got {type(request).__name__}. "
                            f"Use lpld.validate.loader.build_train_loader.")
        record = self.store.read(int(request.batch_id))
        if record.logits is None:
            raise ValueError(f"label store {self.label_dir}: batch {request.batch_id} holds no logits")
        bad = record.image_indices[(record.image_indices < 0) | (record.image_indices >= len(self.paths))]
        if bad.numel():
            raise IndexError(f"label store {self.label_dir}: batch {request.batch_id} names image "
                             f"{int(bad[0])}, but the image folder holds {len(self.paths)} images; "
                             f"the labels were made for other distilled images")
        if request.world_size > 1:
            rows = torch.as_tensor(rank_rows(record.batch_size, request.rank, request.world_size), dtype=torch.int64)
            sub, keep = rank_subrecord(record, rows.tolist())
            keep = torch.as_tensor(keep, dtype=torch.int64)
            logits, indices = record.logits[rows], record.image_indices[rows]
            classes = None if record.topk_indices is None else record.topk_indices[rows]
        else:
            sub, keep = record, torch.arange(record.batch_size)
            logits, indices, classes = record.logits, record.image_indices, record.topk_indices
        sub = dataclasses.replace(sub, logits=None, topk_indices=None)
        views = None
        if not self.views_on_device:
            views = views_uint8([self.image(int(i)) for i in sub.image_indices.tolist()], sub.crops, sub.flips,
                                sub.cutout, self.image_size)
        return LabeledBatch(views, sub, keep, logits.contiguous(), self.targets[indices],
                            torch.tensor(int(request.batch_id)), indices.clone(), record.batch_size,
                            None if classes is None else classes.contiguous())

    def __getitem__(self, index):
        raise RuntimeError(
            "SoftLabelBatches was fetched image by image by torch's stock DataLoader fetcher, so "
            "the LPLD fetcher patch is not active in this process. Build the loader with "
            "lpld.validate.loader.build_train_loader (or use fetcher='getitems').")

    def __getitems__(self, request):
        if not self.allow_getitems:
            self.__getitem__(request)
        return self.load_request(request)


class BatchInputs:
    """The trainer's half of the input pipeline: a :class:`LabeledBatch` -> this rank's
    (images, soft logits, targets) on the device. uint8 views are normalised and mixed here
    (:func:`lpld.augment.normalize_views`, :func:`lpld.augment.apply_mix`: the arithmetic of
    ``replay_batch``, so the images equal the relabel stage's bit for bit); with ``bank`` (a
    :class:`lpld.device_views.ImageBank`) the views themselves are cut on the device."""

    def __init__(self, device: torch.device, mean, std, *, channels_last: bool = False, bank=None,
                 num_classes: int | None = None) -> None:
        self.device = device
        self.num_classes = num_classes  # of the student: top-k labels are scattered into this many
        # constants on the device once: a per-step host-to-device copy would wait for the device
        self.mean = None if mean is None else torch.tensor(mean, dtype=torch.float32, device=device)
        self.std = None if std is None else torch.tensor(std, dtype=torch.float32, device=device)
        self.channels_last, self.bank = channels_last, bank

    def __call__(self, batch: LabeledBatch) -> tuple[torch.Tensor, torch.Tensor | TopkLabels, torch.Tensor]:
        if batch.views is not None:
            views = batch.views.to(self.device, non_blocking=True)
        elif self.bank is not None:
            views = self.bank.views(batch.record)
        else:
            raise ValueError("the batch holds no views: build BatchInputs with the ImageBank of the distilled images")
        images = apply_mix(normalize_views(views, self.mean, self.std), batch.record)
        if batch.keep.numel() != images.shape[0]:  # DDP: drop the mix partners of other ranks' rows
            images = images[batch.keep.to(self.device, non_blocking=True)]
        images = to_channels_last(images, self.channels_last)
        soft = batch.soft_logits.to(self.device, non_blocking=True).float()
        if batch.topk_indices is not None:
            if self.num_classes is None:
                raise ValueError("top-k labels need the student's class count: BatchInputs(..., num_classes=)")
            soft = TopkLabels(soft, batch.topk_indices.to(self.device, non_blocking=True), self.num_classes)
        return images, soft, batch.targets.to(self.device, non_blocking=True)


def _identity(batch):
    return batch


class PlannedBatchSampler(Sampler):
    """Yields one :class:`BatchRequest` per training step of the current epoch."""

    def __init__(self, plan: PruningPlan, rank: int = 0, world_size: int = 1, max_steps: int = 0) -> None:
        self.plan, self.rank, self.world_size, self.max_steps = plan, rank, world_size, max_steps
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def batch_ids(self) -> list[int]:
        ids = self.plan.epoch_batches(self.epoch)
        return ids[:self.max_steps] if self.max_steps > 0 else ids

    def __iter__(self):
        for b in self.batch_ids():
            yield BatchRequest(int(b), self.rank, self.world_size)

    def __len__(self) -> int:
        n = self.plan.batches_per_epoch
        return min(n, self.max_steps) if self.max_steps > 0 else n


def build_train_loader(dataset: SoftLabelBatches, sampler: PlannedBatchSampler, *, workers: int,
                       pin_memory: bool, fetcher: str = "patch", prefetch_factor: int = 2, seed: int = 0):
    """The training DataLoader: ``fetcher='patch'`` serves batches through the run-time fetcher
    patch; ``'getitems'`` through ``Dataset.__getitems__`` with torch's stock fetcher.

    Its own generator (for the workers' base seed) leaves the global RNG alone, so creating the
    persistent iterator once in a resumed run does not shift the dropout stream."""
    kwargs = dict(batch_sampler=sampler, num_workers=workers, pin_memory=pin_memory,
                  collate_fn=_identity, persistent_workers=workers > 0,
                  generator=torch.Generator().manual_seed(seed))
    if workers > 0:
        kwargs["prefetch_factor"] = prefetch_factor
    if fetcher == "patch":
        dataset.allow_getitems = False
        return SoftLabelDataLoader(dataset, worker_init_fn=patched_worker_init(), **kwargs)
    if fetcher == "getitems":
        dataset.allow_getitems = True
        return torch.utils.data.DataLoader(dataset, **kwargs)
    raise ValueError(f"fetcher must be 'patch' or 'getitems'; got {fetcher!r}")
