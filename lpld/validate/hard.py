"""Hard-label epochs: the distilled images with their own class labels, which cost no storage.

HALD's hard epoch (Cui et al., ICML 2026; github Jiacheng8/HALD at ffbca04, ``validate/train_fkd.py``):

* the distilled images as a ``torchvision.datasets.ImageFolder`` with ``RandomResizedCrop(size)``
  (torchvision's scale (0.08, 1) and ratio (3/4, 4/3); their ``--min-scale`` never reaches it) +
  ``RandomHorizontalFlip()`` + ``ToTensor`` + ``Normalize`` (lines 401-408), shuffled, batches of
  ``--hard-batch-size`` 16 (line 131), the last one short (lines 410-416);
* one image dropped from a batch of odd length, as timm's Mixup needs an even batch (lines 554-556);
* ``timm.data.Mixup(mixup_alpha=0.0, cutmix_alpha=1.0, label_smoothing=0.8, num_classes=K)`` on
  every batch (lines 449-454, ``--label-smoothing`` 0.8 at line 133): one lambda ~ Beta(1, 1) per
  batch, the box of timm's ``rand_bbox`` pasted from the reversed batch (``x.flip(0)``), lambda
  corrected to the pasted area, targets ``lam * smooth(y) + (1 - lam) * smooth(y.flip(0))`` with
  ``smooth(y) = (1 - eps) * onehot(y) + eps / K``;
* the soft cross-entropy ``-sum(target * log_softmax(logits))``, batch mean (lines 536-538, 563),
  one optimiser step per batch with the run's optimizer (lines 547-570).

Ours draws the same distributions from explicit generators instead of global ones, so an epoch is a
function of ``(seed, epoch)`` alone (any worker count, after a resume, on every rank):

* the order: a permutation seeded by ``(seed, epoch)``, each image's crop and flip from its own
  generator seeded by ``(seed, epoch, image)`` (:mod:`lpld.data.sampling`, as the teacher's
  training);
* the CutMix of batch ``b``: a ``numpy.random.RandomState`` seeded by ``(seed, epoch, b)`` drawing
  exactly what timm draws from the global ``np.random``, in its order (:func:`cutmix_draw`; a test
  pins the mixed images and targets to ``timm.data.Mixup`` bit for bit on the same draws).

Under DDP every rank builds the same global batch (the same images, crops and CutMix) and trains
on its contiguous share of the rows; it loads only those rows and their CutMix partners.

Class labels: the class folders' positions in sorted order (torchvision's ImageFolder), except for
the authors' ``new<c>`` folders, which are class ``c`` whatever their sorted position (sorted by
name, ``new1000`` would come before ``new101``).
"""
from __future__ import annotations

import dataclasses
import functools
import re
from typing import Iterator, NamedTuple, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Sampler

from ..data import LabeledImages, train_transform
from ..data.sampling import SeededEpochSampler, SeededItems
from ..utils.runtime import to_channels_last

HARD_BATCH_SIZE = 16        # train_fkd.py:131 --hard-batch-size
HARD_LABEL_SMOOTHING = 0.8  # train_fkd.py:133 --label-smoothing (hard epochs only)
HARD_CUTMIX_ALPHA = 1.0     # train_fkd.py:449-454 Mixup(mixup_alpha=0.0, cutmix_alpha=1.0)
HARD_MIX_PROB = 1.0         # timm Mixup's default prob (train_fkd.py:449-454 passes none)
HARD_CROP_SCALE = (0.08, 1.0)  # torchvision RandomResizedCrop's default (train_fkd.py:402)
_MIX_TAG = 0x48415244  # "HARD": keeps the CutMix seeds apart from other (seed, epoch, batch) streams
_RECOVERED = re.compile(r"^new(\d+)$")


def class_targets(images: LabeledImages) -> list[int]:
    """The class of every image: ``c`` for the authors' ``new<c>`` folders, else the folder's
    position among the sorted class folders."""
    names = list(images.classes)
    found = [_RECOVERED.match(n) for n in names]
    if names and all(found):
        number = [int(m.group(1)) for m in found]
        return [number[t] for _, t in images.samples]
    return [int(t) for _, t in images.samples]


# --- CutMix with label smoothing, timm's Mixup on explicit draws -----------------------------------------
def mix_generator(seed: int, epoch: int, batch: int) -> np.random.RandomState:
    """The CutMix generator of batch ``batch`` of hard epoch ``epoch``."""
    return np.random.RandomState(mix_seed(seed, epoch, batch))


def mix_seed(seed: int, epoch: int, batch: int) -> list[int]:
    """The seed words of :func:`mix_generator` (``np.random.seed`` takes the same list)."""
    return [int(seed) % (1 << 32), int(epoch), int(batch), _MIX_TAG]


def cutmix_draw(rng: np.random.RandomState, height: int, width: int, alpha: float = HARD_CUTMIX_ALPHA,
                prob: float = HARD_MIX_PROB) -> tuple[float, tuple[int, int, int, int] | None]:
    """(lambda, box ``(y0, y1, x0, x1)`` or None) of one batch: what ``timm.data.Mixup(mixup_alpha=0,
    cutmix_alpha=alpha, prob=prob)`` draws, in its order (``_params_per_batch``: ``rand() < prob``,
    ``beta(alpha, alpha)``; ``rand_bbox``: ``randint(height)``, ``randint(width)``), and its box and
    area-corrected lambda (``cutmix_bbox_and_lam``). ``alpha`` 0: no CutMix (nothing drawn)."""
    if alpha <= 0 or not rng.rand() < prob:
        return 1.0, None
    lam = float(rng.beta(alpha, alpha))
    if lam == 1.0:
        return 1.0, None
    ratio = np.sqrt(1 - lam)
    cut_h, cut_w = int(height * ratio), int(width * ratio)
    cy, cx = rng.randint(0, height), rng.randint(0, width)
    y0, y1 = (int(np.clip(v, 0, height)) for v in (cy - cut_h // 2, cy + (cut_h + 1) // 2))
    x0, x1 = (int(np.clip(v, 0, width)) for v in (cx - cut_w // 2, cx + (cut_w + 1) // 2))
    return 1.0 - (y1 - y0) * (x1 - x0) / float(height * width), (y0, y1, x0, x1)


def smooth_one_hot(labels: torch.Tensor, num_classes: int, smoothing: float) -> torch.Tensor:
    """``(1 - eps) * onehot + eps / K`` (timm's ``one_hot`` with ``on = 1 - eps + eps / K``)."""
    off = smoothing / num_classes
    full = torch.full((labels.shape[0], num_classes), off, device=labels.device)
    return full.scatter_(1, labels.long().view(-1, 1), 1.0 - smoothing + off)


def mix_rows(x: torch.Tensor, partners: torch.Tensor, labels: torch.Tensor, partner_labels: torch.Tensor,
             lam: float, box, num_classes: int, smoothing: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows ``x`` CutMixed with their partners' pixels in ``box`` and their targets: timm's
    ``_mix_batch`` + ``mixup_target`` for rows whose partners are given explicitly (the full batch:
    ``partners = x.flip(0)``)."""
    if box is not None:
        y0, y1, x0, x1 = box
        x = x.clone()
        x[:, :, y0:y1, x0:x1] = partners[:, :, y0:y1, x0:x1]
    own = smooth_one_hot(labels, num_classes, smoothing)
    other = smooth_one_hot(partner_labels, num_classes, smoothing)
    return x, own * lam + other * (1.0 - lam)


def hard_cutmix(x: torch.Tensor, labels: torch.Tensor, num_classes: int, rng: np.random.RandomState,
                smoothing: float = HARD_LABEL_SMOOTHING, alpha: float = HARD_CUTMIX_ALPHA
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """A whole batch, as ``timm.data.Mixup(0.0, alpha, label_smoothing=smoothing)(x, labels)``."""
    lam, box = cutmix_draw(rng, x.shape[-2], x.shape[-1], alpha)
    return mix_rows(x, x.flip(0), labels, labels.flip(0), lam, box, num_classes, smoothing)


def hard_label_loss(logits: torch.Tensor, target: torch.Tensor, reduction: str = "sum") -> torch.Tensor:
    """``timm.loss.SoftTargetCrossEntropy`` (``reduction="mean"``), or its sum over the rows (0 for
    no rows, for the trainer's DDP scaling); fp32 whatever the logits' dtype."""
    rows = -(target.float() * F.log_softmax(logits.float(), dim=-1)).sum(dim=-1)
    if reduction == "sum":
        return rows.sum()
    if reduction == "mean":
        return rows.mean()
    raise ValueError(f"reduction must be 'sum' or 'mean'; got {reduction!r}")


# --- the epoch's batches ----------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class HardStep:
    """One global hard batch and this rank's part of it."""
    batch: int                      # its number within the epoch (seeds its CutMix)
    keys: tuple[tuple[int, int], ...]  # (image index, item seed) of its rows, odd row dropped
    rows: tuple[int, ...]           # this rank's positions
    needed: tuple[int, ...]         # positions this rank loads: its rows and their partners

    @property
    def global_rows(self) -> int:
        return len(self.keys)


def rank_positions(rows: int, rank: int, world_size: int) -> list[int]:
    """Contiguous share of ``rows`` positions (sizes differ by at most one), as the soft batches."""
    return np.array_split(np.arange(rows), world_size)[rank].tolist()


def hard_steps(num_images: int, batch_size: int, seed: int, epoch: int, rank: int = 0,
               world_size: int = 1) -> list[HardStep]:
    """The steps of hard epoch ``epoch``: the seeded order cut into ``batch_size`` batches, the last
    one short; a batch of odd length loses its last image (theirs, for timm's Mixup); a batch
    left empty is no step."""
    sampler = SeededEpochSampler(num_images, seed, shuffle=True)
    sampler.set_epoch(epoch)
    order = list(sampler)
    out = []
    for start in range(0, len(order), batch_size):
        keys = order[start:start + batch_size]
        keys = keys[:len(keys) - len(keys) % 2]
        if not keys:
            continue
        rows = rank_positions(len(keys), rank, world_size)
        needed = sorted(set(rows) | {len(keys) - 1 - r for r in rows})
        out.append(HardStep(len(out), tuple(keys), tuple(rows), tuple(needed)))
    return out


class HardBatchSampler(Sampler):
    """Yields, per step of the current epoch, the (index, seed) keys of the rows this rank loads."""

    def __init__(self, num_images: int, batch_size: int, seed: int, rank: int = 0, world_size: int = 1) -> None:
        self.num_images, self.batch_size, self.seed = num_images, batch_size, seed
        self.rank, self.world_size = rank, world_size
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def steps(self) -> list[HardStep]:
        return hard_steps(self.num_images, self.batch_size, self.seed, self.epoch, self.rank, self.world_size)

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        for step in self.steps():
            yield [step.keys[p] for p in step.needed]

    def __len__(self) -> int:
        return len(self.steps())


def _collate(items: Sequence[tuple[torch.Tensor, int]], size: int) -> tuple[torch.Tensor, torch.Tensor]:
    if not items:
        return torch.zeros(0, 3, size, size), torch.zeros(0, dtype=torch.int64)
    return torch.stack([x for x, _ in items]), torch.tensor([int(t) for _, t in items], dtype=torch.int64)


class HardBatch(NamedTuple):
    """This rank's rows of one hard batch on the device, mixed."""
    images: torch.Tensor   # [b, 3, S, S] normalised, CutMixed
    target: torch.Tensor   # [b, K] the mixed, smoothed targets
    labels: torch.Tensor   # [b] the rows' own classes (train accuracy, as theirs at line 566)
    global_rows: int       # rows of the whole batch over all ranks


class HardEpochs:
    """The hard epochs of one run: ``set_epoch(e)``, then iterate: one :class:`HardBatch` per step.

    ``images``: the distilled images (:class:`lpld.data.ImageFolder`); ``size``: the crop size;
    ``dataset``: its normalisation; the rest as the options ``hard_*`` say."""

    def __init__(self, images: LabeledImages, size: int, dataset: str, *, num_classes: int, device: torch.device,
                 batch_size: int = HARD_BATCH_SIZE, smoothing: float = HARD_LABEL_SMOOTHING,
                 alpha: float = HARD_CUTMIX_ALPHA, seed: int = 0, rank: int = 0, world_size: int = 1,
                 workers: int = 0, pin_memory: bool = False, prefetch_factor: int = 2,
                 channels_last: bool = False) -> None:
        targets = class_targets(images)
        bad = [t for t in targets if not 0 <= t < num_classes]
        if bad:
            raise ValueError(f"the distilled images name class {bad[0]}, but the student has {num_classes} classes")
        labelled = LabeledImages([(p, t) for (p, _), t in zip(images.samples, targets)], list(images.classes),
                                 train_transform(size, dataset, scale=HARD_CROP_SCALE))
        self.sampler = HardBatchSampler(len(labelled), batch_size, seed, rank, world_size)
        kwargs = dict(batch_sampler=self.sampler, num_workers=workers, pin_memory=pin_memory,
                      collate_fn=functools.partial(_collate, size=size), persistent_workers=workers > 0,
                      # its own generator (the workers' base seed): the global RNG is left alone
                      generator=torch.Generator().manual_seed(seed))
        if workers > 0:
            kwargs["prefetch_factor"] = prefetch_factor
        self.loader = DataLoader(SeededItems(labelled), **kwargs)
        self.num_classes, self.smoothing, self.alpha, self.seed = num_classes, smoothing, alpha, seed
        self.size, self.device, self.channels_last = size, device, channels_last
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        self.sampler.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.sampler)

    def __iter__(self) -> Iterator[HardBatch]:
        steps = self.sampler.steps()
        for step, (loaded, labels) in zip(steps, self.loader):
            where = {p: k for k, p in enumerate(step.needed)}
            own = torch.tensor([where[r] for r in step.rows], dtype=torch.int64)
            other = torch.tensor([where[step.global_rows - 1 - r] for r in step.rows], dtype=torch.int64)
            loaded = loaded.to(self.device, non_blocking=True)
            labels = labels.to(self.device, non_blocking=True)
            lam, box = cutmix_draw(mix_generator(self.seed, self.epoch, step.batch), self.size, self.size, self.alpha)
            own_d, other_d = own.to(self.device), other.to(self.device)
            images, target = mix_rows(loaded[own_d], loaded[other_d], labels[own_d], labels[other_d], lam, box,
                                      self.num_classes, self.smoothing)
            yield HardBatch(to_channels_last(images, self.channels_last), target, labels[own_d], step.global_rows)
