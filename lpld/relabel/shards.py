"""Relabelling over batch ranges, and the merge: the output never depends on the sharding.

Shard ``i`` of ``n`` generates a contiguous range of the planned batches into its own small store
``<output_dir>.shards/<i>-of-<n>`` (:func:`relabel_shard_plan`; every batch draws from a generator
seeded by (fkd_seed, batch id), so a batch is the same whoever makes it).
:func:`merge_shards` then writes them, in batch order and through the same writer, into
``<output_dir>``: the merged store is byte-identical to a single-process run. A relabel step that
finds shard outputs (:func:`has_shards`) merges them instead of generating again.
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
from typing import Any

from ..labels import LabelStore, LabelStoreWriter
from ..utils.errors import InputValueError
from ..utils.log import get_logger
from ..utils.owner import entries
from ..utils.ranges import split_range

log = get_logger(__name__)

SHARDS_SUFFIX = ".shards"
SHARD_KEY = "shard"  # manifest entry of a relabel shard store (absent from a merged / single-run store)
_SHARD_DIR = re.compile(r"^(\d{5})-of-(\d{5})$")


def check_shardable(cfg: argparse.Namespace) -> None:
    """A relabel run that can be split into batch-range shards: our format, recorded augmentation."""
    if getattr(cfg, "format", "ours") != "ours":
        raise InputValueError("sharded relabelling writes our store format; convert the merged store with "
                              "lpld convert-labels --to authors")
    if getattr(cfg, "augmentation", "recorded") == "regenerated":
        # its batches are checked by regenerating their augmentation, which the merge cannot do
        # from a shard alone: write it in one job
        raise InputValueError(f"{cfg.output_dir}: a store with augmentation 'regenerated' is written "
                              f"in one job; run relabel without --relabel-shards (or with 1)")


def shards_dir(output_dir: str) -> str:
    return os.path.normpath(output_dir) + SHARDS_SUFFIX


def shard_store(output_dir: str, index: int, count: int) -> str:
    return os.path.join(shards_dir(output_dir), f"{index:05d}-of-{count:05d}")


def relabel_shard_plan(manifest: dict[str, Any], shard: list[int], output_dir: str) -> tuple[dict, int, str]:
    """For relabel's ``batch_shard = [index, count]``: (the shard store's manifest, the global id
    of its first batch, its folder). The shard store holds batches ``[first, first + planned)``
    of the full plan as its rows ``0..planned-1``."""
    if len(shard) != 2:
        raise InputValueError(f"relabel batch_shard must be [index, count]; got {shard!r}")
    index, count = (int(v) for v in shard)
    total = int(manifest["planned_batches"])
    first, stop = split_range(0, total, index, count)
    if stop <= first:
        raise InputValueError(f"relabel batch_shard {index}/{count}: the store plans only {total} batches; "
                              f"use at most {total} shards")
    sub = {**manifest, "planned_batches": stop - first,
           SHARD_KEY: {"index": index, "count": count, "first_batch": first, "planned_batches": total}}
    return sub, first, shard_store(output_dir, index, count)


def has_shards(stage_cfg: argparse.Namespace) -> int:
    """Shard count of the relabel shard stores beside ``stage_cfg.output_dir`` (0: none)."""
    out = getattr(stage_cfg, "output_dir", None) or getattr(stage_cfg, "fkd_path", None)
    folder = shards_dir(out) if out else None
    if not folder or not os.path.isdir(folder):
        return 0
    counts = {int(m.group(2)) for m in map(_SHARD_DIR.match, os.listdir(folder)) if m}
    if len(counts) > 1:
        raise InputValueError(f"{folder} holds shards of different counts {sorted(counts)}; delete it and "
                              f"relabel again")
    return counts.pop() if counts else 0


def merge_shards(stage_cfg: argparse.Namespace, count: int | None = None) -> str:
    """Write the ``count`` shard stores of ``stage_cfg``'s relabel run into ``output_dir``, in
    batch order, through the store writer (so the manifest, arrays, checksums and progress file
    are byte for byte those of a single-process run); then remove the shards. Returns the store."""
    out = stage_cfg.output_dir or stage_cfg.fkd_path
    count = count or has_shards(stage_cfg)
    if not count:
        raise InputValueError(f"no relabel shards beside {out} ({shards_dir(out)} is missing)")
    stores, manifest = [], None
    for index in range(count):
        path = shard_store(out, index, count)
        if not os.path.isfile(os.path.join(path, "manifest.json")):
            raise InputValueError(f"relabel shard {index} of {count} is missing ({path}); run that shard "
                                  f"(batch_shard [{index}, {count}]) before merging")
        store = LabelStore(path)
        info = store.manifest.get(SHARD_KEY) or {}
        if store.num_batches < int(store.manifest["planned_batches"]):
            raise InputValueError(f"relabel shard {path} is incomplete ({store.num_batches}/"
                                  f"{store.manifest['planned_batches']} batches); rerun it to finish it")
        full = _unsharded(store.manifest)
        if manifest is None:
            manifest = full
        elif full != manifest or info.get("index") != index or info.get("count") != count:
            raise InputValueError(f"relabel shard {path} was made with other settings than shard 0 of {count}; "
                                  f"delete {shards_dir(out)} and relabel again")
        stores.append((int(info["first_batch"]), store))
    expected = 0
    for first, store in stores:  # contiguous, in order, exhaustive
        if first != expected:
            raise InputValueError(f"relabel shards of {out} do not tile the plan (a shard starts at batch "
                                  f"{first}, expected {expected}); delete {shards_dir(out)} and relabel again")
        expected += store.num_batches
    if expected != manifest["planned_batches"]:
        raise InputValueError(f"relabel shards of {out} hold {expected} of {manifest['planned_batches']} batches")
    writer = LabelStoreWriter(out, manifest, resume=True, overwrite=bool(getattr(stage_cfg, "overwrite", False)),
                              commit_every=1 << 30)
    try:
        for first, store in stores:
            for k in range(max(0, writer.next_id - first), store.num_batches):
                record = store.read(k)  # verifies the batch's checksum
                record.batch_id = first + k
                writer.write(record)
    finally:
        writer.close()
    for _, store in stores:  # each one checked above to be a shard store of ours
        shutil.rmtree(store.path)
    if not entries(shards_dir(out)):  # only lpld's lock files are left; anything else stays
        shutil.rmtree(shards_dir(out))
    log.info(f"[relabel] merged {count} shards into {out}")
    return out


def _unsharded(manifest: dict[str, Any]) -> dict[str, Any]:
    """The manifest a single-process run writes, from a shard's (same keys, same order)."""
    info = manifest[SHARD_KEY]
    return {k: (info["planned_batches"] if k == "planned_batches" else v)
            for k, v in manifest.items() if k not in (SHARD_KEY, "num_batches")}
