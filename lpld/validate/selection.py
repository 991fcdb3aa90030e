"""Label-selection scores: how informative each stored soft-label batch is, by a data-pruning metric.

The authors' ``--prune_metric`` lists ``aum, forgetting, yoco, entropy, el2n`` and raises
``NotImplementedError`` for all of them (``train_FKD_label_pruning_batch.py``, ``main()``). Here each
metric is its source paper's per-example score, computed for every *view* of a stored batch (one
augmented, possibly CutMix-ed crop and its soft label) and averaged over the batch, since the stored
batch is the unit label pruning keeps or drops. Definitions, sources and what is ours:
``docs/label_selection.md``.

Label of a view: the hard labels of its images mixed as its pixels are: for CutMix the partner's
share is the recorded box's area over the crop's (``mix_bbox``), for MixUp ``1 - lam``. EL2N and
LBPE compare to that mixed one-hot vector; AUM and forgetting need one class, the view's dominant
class (the larger share; on an exact tie the lower class id).

Trajectory of a view: the logits of the model(s) the metric is computed from, ``[T, n, classes]``.

* ``teacher`` source (T = 1): the stored teacher logits themselves. No image is read, nothing is
  trained. Defined for el2n, aum and entropy (the "post-training" form of each: the trained
  network's score).
* ``proxy`` source (T = ``proxy_epochs``): a student (``model``) trained by KD on the stored
  batches in generation order, one stored epoch per proxy epoch, AdamW at ``adamw_lr``; after each
  proxy epoch its logits on every candidate view (replayed from the store). Forgetting and YOCO's
  LBPE are defined on a training trajectory, so they need this source.

Per-batch statistics are accumulated once (sums over the batch's views per snapshot) and every
metric is a function of them, so all five scores come out of one pass.
"""
from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import os
from typing import Any, Callable, Iterable, Sequence

import numpy as np
import torch
import torch.distributed as dist

from ..augment import BatchRecord
from ..config import ConfigError, Option
from ..data import DATASET_IMAGE_SIZE, ImageFolder, canonical_dataset, dataset_num_classes, normalization
from ..models import apply_tiny_stem, build_model
from ..utils.io import atomic_json_dump
from ..utils.log import get_logger
from ..utils.runtime import resolve_device, seed_everything
from .loader import BatchInputs, BatchRequest, SoftLabelBatches
from .loss import kd_loss, resolve_loss_variant
from .pruning import SCORE_METRICS, PruningPlan

log = get_logger(__name__)

TRAJECTORY_METRICS = ("forgetting", "yoco")  # need several snapshots
SOURCES = ("auto", "teacher", "proxy")
SELECTION_FILE = "label_selection.json"

SELECTION_SCHEMA = {
    "prune_keep": Option("high", str, "score metrics: keep the stored batches with the highest or the lowest "
                         "score", choices=("high", "low")),
    "selection_source": Option("auto", str, "what the score metrics are computed from: teacher (the stored "
                               "logits), proxy (a short KD run of the student; forgetting and yoco need it), "
                               "auto (proxy for forgetting/yoco, teacher otherwise)", choices=SOURCES),
    "proxy_epochs": Option(5, int, "proxy source: stored epochs the proxy student trains on; one snapshot "
                           "after each", min=1),
    "yoco_topk": Option(3, int, "yoco: LBPE summed over the proxy snapshots with the k highest accuracies",
                        "he-y/you-only-condense-once generate_importance_score.py --topk (3 for DSA/MTT/KIP)", min=1),
}


# --- view labels -------------------------------------------------------------------------------------
def partner_share(record: BatchRecord, image_size: int | None) -> float:
    """Fraction of each view's pixels taken from its mix partner (0 without mixing)."""
    if record.mix_index is None:
        return 0.0
    if record.mix_bbox is None:  # MixUp: lam * x + (1 - lam) * x[perm]
        return 1.0 - float(record.mix_lam)
    if not image_size:
        raise ValueError("the CutMix share of a view needs the crop size: the label store records no "
                         "image_size; pass --image-size")
    x1, y1, x2, y2 = (int(v) for v in record.mix_bbox)
    return (x2 - x1) * (y2 - y1) / float(image_size * image_size)


def view_targets(record: BatchRecord, labels: torch.Tensor, num_classes: int,
                 image_size: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    """(mixed one-hot targets [n, classes] float32, dominant class [n] int64) of a record's views."""
    own = labels[record.image_indices]
    targets = torch.nn.functional.one_hot(own, num_classes).float()
    share = partner_share(record, image_size)
    if share > 0:
        partner = own[record.mix_index]
        targets = (1 - share) * targets + share * torch.nn.functional.one_hot(partner, num_classes).float()
    return targets, targets.argmax(dim=1)  # argmax: first maximum, i.e. the lower class on a tie


# --- per-batch statistics ----------------------------------------------------------------------------
@dataclasses.dataclass
class BatchStats:
    """Sums over one stored batch's views, per snapshot (arrays of length T)."""
    views: int
    l2: np.ndarray        # sum of ||softmax(z_t) - y||_2
    margin: np.ndarray    # sum of z_t[d] - max_{j != d} z_t[j]
    entropy: np.ndarray   # sum of H(softmax(z_t))
    correct: np.ndarray   # number of views with argmax z_t == d
    forgetting: float     # sum over views of forgetting events (never correct: T)


def batch_stats(trajectory: torch.Tensor, targets: torch.Tensor, dominant: torch.Tensor) -> BatchStats:
    """``trajectory``: logits [T, n, classes] of the n views at T snapshots (in training order)."""
    z = trajectory.double()
    prob = torch.softmax(z, dim=-1)
    log_prob = torch.log_softmax(z, dim=-1)
    l2 = torch.linalg.vector_norm(prob - targets.double(), dim=-1)                    # [T, n]
    entropy = -(prob * log_prob).sum(dim=-1)                                         # [T, n]
    own = z.gather(-1, dominant.view(1, -1, 1).expand(z.shape[0], -1, 1)).squeeze(-1)
    others = z.scatter(-1, dominant.view(1, -1, 1).expand(z.shape[0], -1, 1), float("-inf"))
    margin = own - others.max(dim=-1).values                                         # [T, n]
    correct = z.argmax(dim=-1) == dominant.view(1, -1)                               # [T, n]
    forgotten = (correct[:-1] & ~correct[1:]).sum(dim=0).double()                    # [n]
    never = ~correct.any(dim=0)
    forgotten[never] = float(z.shape[0])  # Toneva et al.: never learned = the most forgettable
    return BatchStats(views=int(z.shape[1]), l2=l2.sum(1).numpy(), margin=margin.sum(1).numpy(),
                      entropy=entropy.sum(1).numpy(), correct=correct.sum(1).numpy().astype(np.int64),
                      forgetting=float(forgotten.sum()))


def metric_scores(stats: Sequence[BatchStats], metric: str, yoco_topk: int = 3) -> np.ndarray:
    """Per-batch scores (mean over the batch's views) from accumulated statistics."""
    if metric not in SCORE_METRICS:
        raise ValueError(f"unknown label-selection metric {metric!r}; expected one of {SCORE_METRICS}")
    views = np.array([s.views for s in stats], dtype=np.float64)
    if metric == "el2n":
        total = np.array([s.l2.mean() for s in stats])
    elif metric == "aum":
        total = np.array([s.margin.mean() for s in stats])
    elif metric == "entropy":
        total = np.array([s.entropy.mean() for s in stats])
    elif metric == "forgetting":
        total = np.array([s.forgetting for s in stats])
    else:  # yoco: LBPE over the k snapshots with the most correct views
        correct = np.sum([s.correct for s in stats], axis=0)
        k = min(yoco_topk, len(correct))
        top = np.sort(np.argsort(-correct, kind="stable")[:k])
        total = np.array([s.l2[top].sum() for s in stats])
    return total / views


def unit_scores(batch_values: np.ndarray, views: np.ndarray, batches_per_epoch: int, unit: str) -> np.ndarray:
    """Batch scores -> the plan's units: a stored epoch scores the view-weighted mean of its batches."""
    if unit == "batch":
        return batch_values
    epochs = len(batch_values) // batches_per_epoch
    sums = (batch_values * views)[:epochs * batches_per_epoch].reshape(epochs, batches_per_epoch).sum(1)
    return sums / views[:epochs * batches_per_epoch].reshape(epochs, batches_per_epoch).sum(1)


# --- trajectories ------------------------------------------------------------------------------------
def teacher_stats(store, batch_ids: Iterable[int], labels: torch.Tensor, num_classes: int,
                  image_size: int | None) -> list[BatchStats]:
    """Statistics from the stored teacher logits (T = 1): reads the store only."""
    out = []
    for b in batch_ids:
        record = store.read(int(b))
        targets, dominant = view_targets(record, labels, num_classes, image_size)
        out.append(batch_stats(record.logits.float().unsqueeze(0), targets, dominant))
    return out


def snapshot_stats(store, batch_ids: Sequence[int], labels: torch.Tensor, num_classes: int, image_size: int,
                   snapshots: Sequence[torch.nn.Module], images: Callable[[int], torch.Tensor],
                   device: torch.device) -> list[BatchStats]:
    """Statistics from model snapshots (T = len(snapshots)) on the replayed views of every batch.
    ``images(b)``: the replayed, mixed input of stored batch b, [n, 3, S, S]."""
    for m in snapshots:
        m.eval()
    out = []
    with torch.no_grad():
        for b in batch_ids:
            record = store.read(int(b))
            targets, dominant = view_targets(record, labels, num_classes, image_size)
            x = images(int(b)).to(device)
            trajectory = torch.stack([m(x).float().cpu() for m in snapshots])
            out.append(batch_stats(trajectory, targets, dominant))
    return out


def train_proxy(model: torch.nn.Module, batch_ids_per_epoch: Sequence[Sequence[int]],
                load: Callable[[int], tuple[torch.Tensor, torch.Tensor]], loss_fn, *, lr: float,
                weight_decay: float, device: torch.device) -> list[torch.nn.Module]:
    """KD-train ``model`` on the stored batches, one list of batch ids per proxy epoch; a frozen copy
    after each epoch. ``load(b)`` -> (images, teacher logits)."""
    model.to(device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    snapshots = []
    for ids in batch_ids_per_epoch:
        model.train()
        for b in ids:
            x, soft = load(int(b))
            loss = loss_fn(model(x.to(device)), soft.to(device))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        snapshots.append(copy.deepcopy(model).eval().requires_grad_(False))
    return snapshots


# --- for the validate stage ----------------------------------------------------------------------------
def resolve_source(metric: str, source: str) -> str:
    if source == "auto":
        return "proxy" if metric in TRAJECTORY_METRICS else "teacher"
    if source == "teacher" and metric in TRAJECTORY_METRICS:
        raise ConfigError(f"prune_metric {metric} is defined on a training trajectory; the teacher's stored "
                          f"logits are a single snapshot. Use --selection-source proxy (or auto).")
    return source


def _settings(cfg, store, source: str) -> dict[str, Any]:
    s = {"prune_metric": cfg.prune_metric, "prune_keep": cfg.prune_keep, "selection_source": source,
         "granularity": cfg.granularity, "train_epochs": cfg.train_epochs,
         "label_dir": os.path.abspath(cfg.label_dir), "store_batches": int(store.num_batches),
         "store_seed": store.manifest.get("seed"), "yoco_topk": cfg.yoco_topk}
    if source == "proxy":
        s.update(proxy_epochs=cfg.proxy_epochs, model=cfg.model, seed=cfg.seed, adamw_lr=cfg.adamw_lr,
                 adamw_weight_decay=cfg.adamw_weight_decay, temperature=cfg.temperature, loss=cfg.loss,
                 train_dir=os.path.abspath(cfg.train_dir))
    return s


def plan_scores(cfg: argparse.Namespace, store) -> tuple[float, ...]:
    """Scores of every stored unit the plan may choose (validate's ``make_plan``), computed once per
    output directory and recorded in ``<output_dir>/label_selection.json`` with the chosen pool.
    Under torch.distributed rank 0 computes and broadcasts, so every rank builds the same pool."""
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        box = [_plan_scores(cfg, store) if dist.get_rank() == 0 else None]
        dist.broadcast_object_list(box, src=0)
        return box[0]
    return _plan_scores(cfg, store)


def _plan_scores(cfg: argparse.Namespace, store) -> tuple[float, ...]:
    metric = cfg.prune_metric
    source = resolve_source(metric, cfg.selection_source)
    if store.manifest.get("label_topk") is not None:
        raise ConfigError(f"prune_metric {metric} scores views by their full teacher distribution, but "
                          f"{cfg.label_dir} holds top-{store.manifest['label_topk']} labels. Use prune_metric random, "
                          f"or score a full-label store of the same run (relabel without --label-topk).")
    bpe = store.batches_per_epoch
    unit = "epoch" if cfg.granularity == "epoch" else "batch"
    needed = cfg.train_epochs * bpe
    if store.num_batches < needed:
        raise ConfigError(f"prune_metric {metric} ranks all {needed} stored batches of {cfg.train_epochs} epochs "
                          f"(x {bpe} batches), but {cfg.label_dir} holds {store.num_batches} (generated with "
                          f"prune_ratio {store.manifest.get('prune_ratio')}). Generate the labels with "
                          f"prune_ratio 0, or train fewer --train-epochs.")
    settings = _settings(cfg, store, source)
    record_path = os.path.join(cfg.output_dir, SELECTION_FILE)
    if os.path.isfile(record_path):
        with open(record_path) as f:
            saved = json.load(f)
        if saved.get("settings") == settings:
            return tuple(saved["unit_scores"])
        if getattr(cfg, "resume", False):
            raise ConfigError(f"--resume: {record_path} was written with other label-selection settings "
                              f"({saved.get('settings')}); use another --output-dir")
    if metric in TRAJECTORY_METRICS and source == "proxy" and cfg.proxy_epochs < 2:
        raise ConfigError(f"prune_metric {metric} counts changes between snapshots; --proxy-epochs must be >= 2")
    stats = _compute_stats(cfg, store, source, range(needed))
    views = np.array([s.views for s in stats], dtype=np.float64)
    scores = tuple(float(v) for v in unit_scores(metric_scores(stats, metric, cfg.yoco_topk), views, bpe, unit))
    plan = PruningPlan(batches_per_epoch=bpe, train_epochs=cfg.train_epochs, prune_ratio=cfg.prune_ratio,
                       metric=metric, granularity=cfg.granularity, remap_last_batch=cfg.remap_last_batch,
                       scores=scores, keep=cfg.prune_keep)
    os.makedirs(cfg.output_dir, exist_ok=True)
    atomic_json_dump({"settings": settings, "unit": unit, "unit_scores": list(scores), "pool": plan.pool_ids},
                     record_path)
    return scores


def _labels(cfg) -> tuple[Any, torch.Tensor]:
    images = ImageFolder(cfg.train_dir)
    return images, torch.tensor(images.targets, dtype=torch.int64)


def _compute_stats(cfg, store, source: str, batch_ids: Sequence[int]) -> list[BatchStats]:
    dataset = canonical_dataset(cfg.dataset)
    images, labels = _labels(cfg)
    num_classes = cfg.num_classes or dataset_num_classes(dataset, getattr(cfg, "classes", None)) or store.num_classes
    size = cfg.image_size or store.manifest.get("image_size") or DATASET_IMAGE_SIZE.get(dataset)
    if source == "teacher":
        return teacher_stats(store, batch_ids, labels, num_classes, size)
    return _proxy_stats(cfg, store, images, labels, num_classes, int(size), dataset, batch_ids)


def _proxy_stats(cfg, store, images, labels, num_classes: int, size: int, dataset: str,
                 batch_ids: Sequence[int]) -> list[BatchStats]:
    bpe = store.batches_per_epoch
    if not 1 <= cfg.proxy_epochs <= cfg.train_epochs:
        raise ConfigError(f"proxy_epochs must be in 1..train_epochs ({cfg.train_epochs}); got {cfg.proxy_epochs}")
    device = resolve_device(cfg.device)
    mean, std = normalization(dataset)
    data = SoftLabelBatches(images, cfg.label_dir, size, mean, std, allow_getitems=True)
    inputs = BatchInputs(device, mean, std)  # normalises and mixes the worker's uint8 views

    def load(b: int):
        batch_images, soft, _ = inputs(data.load_request(BatchRequest(b)))
        return batch_images, soft

    seed_everything(cfg.seed)
    model = build_model(cfg.model, num_classes)
    has_stem = hasattr(model, "conv1") and hasattr(model, "maxpool")  # as validate's student
    tiny = cfg.tiny_stem if cfg.tiny_stem is not None else (dataset == "tiny" and has_stem)
    if tiny:
        apply_tiny_stem(model)
    variant = resolve_loss_variant(cfg.loss, dataset)
    log.info(f"label selection: training a proxy {cfg.model} for {cfg.proxy_epochs} stored epochs, then scoring "
             f"{len(batch_ids)} stored batches with its {cfg.proxy_epochs} snapshots")
    snapshots = train_proxy(
        model, [range(e * bpe, (e + 1) * bpe) for e in range(cfg.proxy_epochs)], load,
        lambda out, soft: kd_loss(out, soft, cfg.temperature, variant, cfg.label_smoothing),
        lr=cfg.adamw_lr, weight_decay=cfg.adamw_weight_decay, device=device)
    return snapshot_stats(store, batch_ids, labels, num_classes, size, snapshots,
                          lambda b: load(b)[0], device)
