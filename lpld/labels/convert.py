"""Convert a soft-label store between our memory-mapped format and the authors' per-batch files."""
from __future__ import annotations

import os


from .authors import AuthorsLabelStore, AuthorsStoreWriter, is_authors_store
from .common import FORMAT_VERSION, InputValueError, StoreDamagedError
from .store import LabelStore, LabelStoreWriter
from ..utils.progress import progress_bar

FORMATS = ("ours", "authors")


def open_label_store(path: str, batches_per_epoch: int | None = None, index_dir: str | None = None):
    """Open a store of either format: ours (``manifest.json``) or the authors' (``epoch_0/``).

    ``batches_per_epoch`` is needed only for an authors' folder whose first epoch is incomplete
    and that carries no ``lpld_manifest.json``; ``index_dir``: where an authors' folder's
    memory-mapped sampler index is cached (default: the user's cache)."""
    if os.path.isfile(os.path.join(path, "manifest.json")):
        return LabelStore(path)
    if is_authors_store(path):
        return AuthorsLabelStore(path, batches_per_epoch=batches_per_epoch, index_dir=index_dir)
    if not os.path.exists(path):
        raise FileNotFoundError(f"soft-label store not found: {path}")
    raise InputValueError(f"{path} is neither an lpld soft-label store (manifest.json) nor the authors' "
                     f"FKD label folder (epoch_0/batch_0.tar + sampler_indices_epoch.json)")


def writer_for(fmt: str, path: str, manifest: dict | None, **kwargs):
    if fmt == "ours":
        return LabelStoreWriter(path, manifest, **kwargs)
    if fmt == "authors":
        return AuthorsStoreWriter(path, manifest, **kwargs)
    raise InputValueError(f"format must be one of {FORMATS}; got {fmt!r}")


def _target_manifest(src) -> dict:
    """The source's manifest, planned for exactly the batches it holds. An authors' folder without
    our ``lpld_manifest.json`` leaves dataset, seed, image count ... as null (image indices are
    still checked against the image folder when the store is used)."""
    m = dict(src.manifest)
    m["planned_batches"] = src.num_batches
    m["format_version"] = FORMAT_VERSION
    m.pop("checksums", None)  # each writer records its own
    m.setdefault("drop_last", None)
    return m


def incomplete_reason(store) -> str:
    """'' when ``store`` holds every batch its manifest plans; otherwise what is missing."""
    if isinstance(store, AuthorsLabelStore):
        return store.incomplete_reason()
    planned = int(store.manifest.get("planned_batches", store.num_batches))
    if store.num_batches < planned:
        return f"it holds {store.num_batches} of the {planned} planned batches"
    return ""


def convert(src: str, dst: str, to: str = "ours", *, overwrite: bool = False, progress: bool = True) -> str:
    """Copy every stored batch of ``src`` (either format) into a new store ``dst`` in format ``to``.

    The conversion is lossless: logits keep their dtype, crops/flips/Cutout/mix parameters and
    image indices are copied as they are, and so are the content hashes and class list that bind
    the labels to their images and teacher. A store that is incomplete or damaged (every batch's
    checksum is verified as it is read) is refused. Returns ``dst``."""
    if to not in FORMATS:
        raise InputValueError(f"to must be one of {FORMATS}; got {to!r}")
    if os.path.abspath(src) == os.path.abspath(dst):
        raise InputValueError("source and destination are the same folder")
    store = open_label_store(src)
    reason = incomplete_reason(store)
    if reason:
        raise StoreDamagedError(f"will not convert {src}: {reason}. Finish the generation first (rerun the same "
                                f"relabel command; it resumes) or repair it (lpld check-labels --repair).")
    manifest = _target_manifest(store)
    writer = writer_for(to, dst, manifest, resume=False, overwrite=overwrite, commit_every=64)
    try:
        for gid in progress_bar(range(store.num_batches), desc=f"convert -> {to}", disable=not progress):
            writer.write(store.read(gid))
    finally:
        writer.close()
    return dst
