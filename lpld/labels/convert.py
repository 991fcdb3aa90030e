"""Convert a soft-label store between our memory-mapped format, the authors' LPLD per-epoch files
(``authors``) and their LPQLD flat per-batch files (``lpqld``)."""
from __future__ import annotations

import os


from ..data import ImageFolder
from ..utils.progress import progress_bar
from .authors import AuthorsLabelStore, is_authors_store
from .authors_writer import AuthorsStoreWriter
from .common import FORMAT_VERSION, InputValueError, StoreDamagedError, plan_value
from .lpqld_format import LPQLDLabelStore, LPQLDStoreWriter, is_lpqld_store
from .regen import image_sizes
from .store import LabelStore
from .store_writer import LabelStoreWriter

FORMATS = ("ours", "authors", "lpqld")


def open_label_store(path: str, batches_per_epoch: int | None = None, index_dir: str | None = None, *,
                     num_classes: int | None = None, train_dir: str | None = None):
    """Open a store of any format: ours (``manifest.json``), the authors' LPLD folder
    (``epoch_0/``) or their LPQLD flat folder (``batch_0.tar`` + ``sampler_indices_batch.json``).

    ``batches_per_epoch`` is needed only for an authors' folder whose first epoch is incomplete
    and that carries no ``lpld_manifest.json``; ``index_dir``: where an authors' folder's
    memory-mapped sampler index is cached (default: the user's cache); ``num_classes``: the class
    count of an LPQLD top-k folder without our manifest (their files do not record it);
    ``train_dir``: the distilled images, which a store with regenerated augmentation draws its
    crops for (ignored by the other stores)."""
    if os.path.isfile(os.path.join(path, "manifest.json")):
        store = LabelStore(path)
        if train_dir and store.regenerated:
            store.attach_images(image_sizes([p for p, _ in ImageFolder(train_dir).samples]))
        return store
    if is_authors_store(path):
        return AuthorsLabelStore(path, batches_per_epoch=batches_per_epoch, index_dir=index_dir)
    if is_lpqld_store(path):
        return LPQLDLabelStore(path, num_classes=num_classes, batches_per_epoch=batches_per_epoch)
    if not os.path.exists(path):
        raise FileNotFoundError(f"soft-label store not found: {path}")
    raise InputValueError(f"{path} is neither an lpld soft-label store (manifest.json), the authors' LPLD "
                          f"label folder (epoch_0/batch_0.tar + sampler_indices_epoch.json) nor their LPQLD "
                          f"folder (batch_0.tar + sampler_indices_batch.json)")


def writer_for(fmt: str, path: str, manifest: dict | None, **kwargs):
    if fmt == "ours":
        return LabelStoreWriter(path, manifest, **kwargs)
    if manifest is not None and plan_value(manifest, "augmentation") != "recorded":
        raise InputValueError(f"the {fmt} format records every augmentation; augmentation 'regenerated' is "
                              f"written only in our format (--format ours)")
    if manifest is not None and plan_value(manifest, "label_codec") == "uint8":
        raise InputValueError(f"the {fmt} format stores fp16 values; label_codec uint8 is written only in our format")
    if fmt == "authors":
        if manifest is not None and manifest.get("label_topk") is not None:
            raise InputValueError("the authors' LPLD format holds full logits; write top-k labels in our format "
                                  "or their LPQLD format (--format lpqld)")
        return AuthorsStoreWriter(path, manifest, **kwargs)
    if fmt == "lpqld":
        kwargs = {k: v for k, v in kwargs.items() if k in ("resume", "overwrite", "commit_every")}
        return LPQLDStoreWriter(path, manifest, **kwargs)
    raise InputValueError(f"format must be one of {FORMATS}; got {fmt!r}")


def _target_manifest(src, to: str, **labels) -> dict:
    """The source's manifest, planned for exactly the batches it holds. An authors' folder without
    our ``lpld_manifest.json`` leaves dataset, seed, image count ... as null (image indices are
    still checked against the image folder when the store is used). ``labels``: ``label_topk`` /
    ``label_codec`` / ``augmentation`` to change (None: keep the source's); written into the
    authors' or LPQLD formats, augmentation is always recorded and values fp16."""
    m = dict(src.manifest)
    m["planned_batches"] = src.num_batches
    m["format_version"] = FORMAT_VERSION
    m.pop("checksums", None)  # each writer records its own
    m.setdefault("drop_last", None)
    for key, value in labels.items():
        if value is not None:
            m[key] = value
    if to != "ours":
        m["augmentation"], m["label_codec"] = "recorded", None if m.get("label_topk") is None else "float16"
        m.pop("aug_digest", None)
    return m


def incomplete_reason(store) -> str:
    """'' when ``store`` holds every batch its manifest plans; otherwise what is missing."""
    if isinstance(store, AuthorsLabelStore):
        return store.incomplete_reason()
    planned = int(store.manifest.get("planned_batches", store.num_batches))
    if store.num_batches < planned:
        return f"it holds {store.num_batches} of the {planned} planned batches"
    return ""


def convert(src: str, dst: str, to: str = "ours", *, overwrite: bool = False, progress: bool = True,
            num_classes: int | None = None, train_dir: str | None = None, label_topk: int | None = None,
            label_codec: str | None = None, augmentation: str | None = None) -> str:
    """Copy every stored batch of ``src`` (any format) into a new store ``dst`` in format ``to``.

    Without label options the conversion is lossless: logits keep their dtype, crops/flips/Cutout/
    mix parameters and image indices are copied as they are, and so are the content hashes and
    class list that bind the labels to their images and teacher. ``label_topk`` keeps the top k of
    full logits, ``label_codec`` / ``augmentation`` change how our format stores them (lossy
    for uint8). ``num_classes``: for an LPQLD top-k folder without our manifest; ``train_dir``: for
    a store with regenerated augmentation. A store that is incomplete or damaged (every batch's
    checksum is verified as it is read) is refused. Returns ``dst``."""
    if to not in FORMATS:
        raise InputValueError(f"to must be one of {FORMATS}; got {to!r}")
    if os.path.abspath(src) == os.path.abspath(dst):
        raise InputValueError("source and destination are the same folder")
    store = open_label_store(src, num_classes=num_classes, train_dir=train_dir)
    reason = incomplete_reason(store)
    if reason:
        raise StoreDamagedError(f"will not convert {src}: {reason}. Finish the generation first (rerun the same "
                                f"relabel command; it resumes) or repair it (lpld check-labels --repair).")
    have = store.manifest.get("label_topk")
    if label_topk is not None and not 1 <= int(label_topk) <= store.num_classes:
        raise InputValueError(f"label_topk {label_topk} is outside 1..{store.num_classes}, the class count of "
                              f"{src}; use --label-topk 1..{store.num_classes} (or leave it out to keep every class)")
    if label_topk is not None and have is not None and int(label_topk) != int(have):
        raise InputValueError(f"{src} holds top-{have} labels; they can be converted to top-{have} only "
                              f"(got label_topk {label_topk})")
    manifest = _target_manifest(store, to, label_topk=label_topk, label_codec=label_codec, augmentation=augmentation)
    writer = writer_for(to, dst, manifest, resume=False, overwrite=overwrite, commit_every=64)
    try:
        for gid in progress_bar(range(store.num_batches), desc=f"convert -> {to}", disable=not progress):
            writer.write(store.read(gid))
    finally:
        writer.close()
    return dst
