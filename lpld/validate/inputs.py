"""What a student trains from: the label store checked against its images and settings
(:func:`open_store_checked`), the plan of stored batches its soft epochs train on
(:func:`make_plan`: LPLD's pruning plan, or HALD's soft pool beside hard epochs), and what the labels
cost on disk (:func:`label_bytes`, reported in ``final.json``; 0 bytes without a store)."""
from __future__ import annotations

import os
from typing import Any

from ..augment import normalize_mix_type
from ..data import DATASET_IMAGE_SIZE, dataset_num_classes
from ..labels import check_compatible, open_label_store
from ..labels.authors import META
from ..labels.common import StoreMismatchError
from ..labels.store import full_store_bytes, label_row_bytes
from ..labels.topk import parse_label_quantization
from ..utils.errors import InputValueError
from .label_plan import SoftPool, is_mixed
from .pruning import SCORE_METRICS, PruningPlan, pool_size
from .selection import plan_scores


def open_store_checked(cfg, dataset: str, num_images: int):
    """The label store of ``cfg``, checked against the images, the settings and the dataset:
    (store, class count, crop size)."""
    num_classes = cfg.num_classes or dataset_num_classes(dataset, cfg.classes)
    # the label folder may be read-only; a regenerated store draws its crops for these images
    store = open_label_store(cfg.label_dir, index_dir=cfg.output_dir, num_classes=num_classes,
                             train_dir=cfg.train_dir)
    per_epoch = num_images // cfg.batch_size  # the authors' trainer: len(images) // batch_size
    if _records_no_epoch_size(cfg.label_dir) and 0 < store.batches_per_epoch < per_epoch:
        # A pruned ("less label") folder of theirs holds only part of its first epoch, so the files
        # cannot tell the epoch size: take it from the images, as their trainer does.
        store = open_label_store(cfg.label_dir, batches_per_epoch=per_epoch, index_dir=cfg.output_dir,
                                 num_classes=num_classes, train_dir=cfg.train_dir)
    man = store.manifest
    num_classes = num_classes or store.num_classes
    if getattr(store, "regenerated", False) and store.num_batches:
        # drift (another torch version or device) changes every batch: report it here, in one line,
        # rather than from inside a DataLoader worker
        store.read(0)
    if cfg.label_quantization is not None:
        want = parse_label_quantization(cfg.label_quantization)
        if want != man.get("label_topk"):
            have = man.get("label_topk")
            raise StoreMismatchError(f"label_quantization {cfg.label_quantization!r} asks for "
                                     f"{'top-%d' % want if want else 'full'} labels, but {cfg.label_dir} holds "
                                     f"{'top-%d' % have if have else 'full'} labels; relabel with --label-topk "
                                     f"{want or 0} or drop label_quantization")
    check_compatible(store, num_images=num_images, num_classes=num_classes, batch_size=cfg.batch_size,
                     where=f"train_dir {cfg.train_dir}")
    if cfg.mix_type is not None and "mix_type" in man:
        want, have = normalize_mix_type(cfg.mix_type), normalize_mix_type(man["mix_type"])
        if want != have:
            raise StoreMismatchError(f"soft-label store {cfg.label_dir} was generated with mix_type "
                                     f"{have!r}, but mix_type {want!r} is requested; the mix is replayed "
                                     f"from the store, so set --mix-type {have} (or leave it unset)")
    size = cfg.image_size or man.get("image_size") or DATASET_IMAGE_SIZE.get(dataset)
    if size is None:
        raise StoreMismatchError(f"soft-label store {cfg.label_dir} does not record image_size and dataset "
                                 f"{dataset!r} has no preset size; pass --image-size")
    if cfg.image_size and man.get("image_size") and int(man["image_size"]) != cfg.image_size:
        raise StoreMismatchError(f"soft-label store {cfg.label_dir} holds {man['image_size']} px crops, "
                                 f"but image_size {cfg.image_size} is requested")
    return store, num_classes, int(size)


def _records_no_epoch_size(label_dir: str) -> bool:
    """An authors' or LPQLD folder without our side manifest (ours record batches_per_epoch)."""
    return not any(os.path.isfile(os.path.join(label_dir, name)) for name in ("manifest.json", META))


def pool_epochs(cfg, store) -> int:
    """Whole stored epochs in the pool a mixed plan's soft epochs draw from: those of the first
    ``int((1 - prune_ratio) * epochs * batches_per_epoch)`` stored batches (the store a relabel run
    with this prune ratio writes), as far as the store holds them. HALD's ``n = SLC // ipc``
    (train.sh:28) is the number of epochs their relabel stored."""
    bpe = store.batches_per_epoch
    return min(pool_size(cfg.epochs * bpe, cfg.prune_ratio), store.num_batches) // bpe


def soft_pool(cfg, store, plan_segments) -> SoftPool:
    """HALD's soft pool over the first ``plan_block`` (default: every whole) stored epochs of the
    pool (:func:`pool_epochs`)."""
    have = pool_epochs(cfg, store)
    where = (f"{cfg.label_dir} (prune_ratio {cfg.prune_ratio} of {cfg.epochs} epochs x {store.batches_per_epoch} "
             f"batches; it holds {store.num_batches})")
    if have < 1:
        raise StoreMismatchError(f"label_plan {cfg.label_plan} draws whole stored epochs of soft labels, but the pool of "
                                 f"{where} holds less than one epoch's batches; use a smaller --prune-ratio or "
                                 f"--label-plan hard")
    block = cfg.plan_block or have
    if block > have:
        raise StoreMismatchError(f"plan_block {block} asks for {block} stored epochs of soft labels, but the pool of "
                                 f"{where} holds {have} whole epochs; use --plan-block {have} or less")
    return SoftPool(tuple(plan_segments), block, store.batches_per_epoch, cfg.seed)


def make_plan(cfg, store, plan_segments=None) -> PruningPlan | SoftPool:
    """Which stored batches the student trains on, epoch by epoch: LPLD's pruning plan
    (:mod:`lpld.validate.pruning`) for ``label_plan soft``, HALD's soft pool (:class:`SoftPool`)
    for a plan with hard epochs."""
    if is_mixed(cfg.label_plan):
        if cfg.prune_metric in SCORE_METRICS or cfg.prune_mode != "lpld":
            what = f"prune_metric {cfg.prune_metric}" if cfg.prune_metric in SCORE_METRICS else \
                f"prune_mode {cfg.prune_mode}"
            raise InputValueError(f"label_plan {cfg.label_plan} draws its soft epochs' batches as HALD does (every "
                                  f"stored batch of the pool, permuted); {what} chooses them otherwise: use "
                                  f"--label-plan soft for it, or the default random / lpld")
        return soft_pool(cfg, store, plan_segments)
    scores = None
    if cfg.prune_metric in SCORE_METRICS:  # the pool is chosen by a label-selection score
        scores = plan_scores(cfg, store)
    plan = PruningPlan(batches_per_epoch=store.batches_per_epoch, train_epochs=cfg.train_epochs,
                       prune_ratio=cfg.prune_ratio, metric=cfg.prune_metric, granularity=cfg.granularity,
                       replacement=cfg.replacement, remap_last_batch=cfg.remap_last_batch, seed=cfg.seed,
                       scores=scores, keep=cfg.prune_keep, mode=cfg.prune_mode,
                       stored_batches=store.num_batches if cfg.prune_mode == "lpqld" else None)
    if plan.required_batches > store.num_batches:
        man = store.manifest
        raise StoreMismatchError(
            f"{plan.describe()}: training needs stored batches 0..{plan.required_batches - 1}, but "
            f"{cfg.label_dir} holds {store.num_batches} (generated with prune_ratio "
            f"{man.get('prune_ratio')}, epochs {man.get('epochs')}). Use a prune ratio of at least "
            f"the store's, fewer --train-epochs, or regenerate the labels.")
    return plan


NO_LABELS = {"label_topk": None, "label_codec": None, "augmentation": None, "label_bytes_used": 0,
             "label_bytes_actual": 0, "label_bytes_full": None, "compression_nominal": None,
             "compression_actual": None, "pool_batches": 0, "batches_per_epoch": None, "small_pool": False}


def label_bytes(cfg, store, plan, num_images: int, batches_used: int) -> dict[str, Any]:
    """What the labels cost: ``label_bytes_actual`` (every file of the store on disk, manifests
    included), ``label_bytes_full`` (the full fp16 store of the same relabel run: prune 0, all
    classes, recorded augmentation; from the array specs), ``compression_actual`` (their ratio),
    ``compression_nominal`` (1 / (1 - prune_ratio) times full / stored bytes of one view's labels:
    the figure a method's name claims), the pool against one epoch's batches, and
    ``label_bytes_used`` (label bytes of the batches a run can touch). Without a store (a
    hard-label student): 0 bytes, no compression ratio (:data:`NO_LABELS`)."""
    if store is None:
        return dict(NO_LABELS)
    man = store.manifest
    row = label_row_bytes(man)
    full_row = int(man["num_classes"]) * 2
    actual = store.nbytes()
    try:
        full = full_store_bytes({**man, "epochs": man.get("epochs") or cfg.epochs}, num_images=num_images)
    except (KeyError, ValueError, TypeError):
        full = None
    return {
        "label_topk": man.get("label_topk"), "label_codec": man.get("label_codec"),
        "augmentation": man.get("augmentation", "recorded"),
        "label_bytes_used": batches_used * store.batch_size * row,
        "label_bytes_actual": actual, "label_bytes_full": full,
        "compression_nominal": round(full_row / row / (1 - cfg.prune_ratio), 6),
        "compression_actual": None if full is None else round(full / actual, 3),
        "pool_batches": plan.pool_batches, "batches_per_epoch": store.batches_per_epoch,
        "small_pool": plan.pool_batches < store.batches_per_epoch,
    }
