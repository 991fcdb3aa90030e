"""Sharded stages: recovery over class ranges, relabelling over batch ranges, and the merge.

The output never depends on the sharding:

* recover: shard ``i`` of ``n`` synthesises a contiguous range of classes into the one image folder
  (:func:`recover_range`). Each class draws from its own generator seeded by (seed, class) and
  units are fixed by the class ids (:mod:`lpld.recover.run`), so any split writes the same JPEG
  bytes; boundaries fall on unit boundaries so no shard recomputes another's classes.
* relabel: shard ``i`` of ``n`` generates a contiguous range of the planned batches into its own
  small store ``<output_dir>.shards/<i>-of-<n>`` (:func:`relabel_shard_plan`; every batch draws
  from a generator seeded by (fkd_seed, batch id), so a batch is the same whoever makes it).
  :func:`merge_shards` then writes them, in batch order and through the same writer, into
  ``<output_dir>``: the merged store is byte-identical to a single-process run.

The pipeline calls :func:`run_shard` for a sharded step and, when the unsharded step finds shard
outputs (:func:`has_shards`), :func:`merge_shards` instead of generating again.
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
from typing import Any

from ..utils.errors import InputValueError

SHARDS_SUFFIX = ".shards"
SHARD_KEY = "shard"  # manifest entry of a relabel shard store (absent from a merged / single-run store)
_SHARD_DIR = re.compile(r"^(\d{5})-of-(\d{5})$")


def split_range(start: int, end: int, index: int, count: int, align: int = 1) -> tuple[int, int]:
    """The ``index``-th of ``count`` contiguous, near-equal parts of ``[start, end)``; inner
    boundaries are rounded to multiples of ``align`` (a part may then be empty)."""
    if not 0 <= index < count:
        raise InputValueError(f"shard {index} of {count} does not exist: need 0 <= index < count")

    def cut(k: int) -> int:
        if k in (0, count):
            return start if k == 0 else end
        b = start + (end - start) * k // count
        return min(end, max(start, (b + align // 2) // align * align))
    return cut(index), cut(index + 1)


def run_shard(kind: str, stage_cfg: argparse.Namespace, shard: tuple[int, int], **stage_kwargs: Any) -> Any:
    """Run shard ``shard = (index, count)`` of a recover or relabel stage config (the config the
    stage would run unsharded). ``stage_kwargs`` go to the stage function (relabel: ``teacher``)."""
    index, count = shard
    if kind == "recover":
        from ..recover import run_recovery
        start, end = recover_range(stage_cfg, index, count)
        if start >= end:
            print(f"[shard {index}/{count}] no class in this shard")
            return None
        return run_recovery(argparse.Namespace(**{**vars(stage_cfg), "class_start": start, "class_end": end}),
                            **stage_kwargs)
    if kind == "relabel":
        from ..relabel import run_relabel
        if getattr(stage_cfg, "format", "ours") != "ours":
            raise InputValueError("sharded relabelling writes our store format; convert the merged store with "
                                  "lpld convert-labels --to authors")
        if getattr(stage_cfg, "augmentation", "recorded") == "regenerated":
            # its batches are checked by regenerating their augmentation, which the merge cannot do
            # from a shard alone: write it in one job
            raise InputValueError(f"{stage_cfg.output_dir}: a store with augmentation 'regenerated' is written "
                                  f"in one job; run relabel without --relabel-shards (or with 1)")
        return run_relabel(argparse.Namespace(**{**vars(stage_cfg), "batch_shard": [index, count]}), **stage_kwargs)
    raise InputValueError(f"a step of kind {kind!r} cannot be sharded; only recover (classes) and relabel "
                          f"(batches) are")


# ---- recover ------------------------------------------------------------------------------------

def recover_range(cfg: argparse.Namespace, index: int, count: int) -> tuple[int, int]:
    """Classes ``[start, end)`` of shard ``index`` of ``count`` within the config's class range,
    boundaries on unit boundaries (class mode: groups_per_step classes; sre2l: batch_size blocks)."""
    num_classes = cfg.num_classes
    if num_classes is None:
        from ..models import read_state_dict
        from ..models.teacher import infer_num_classes
        num_classes = infer_num_classes(read_state_dict(cfg.teacher), cfg.teacher)
    end = num_classes if cfg.class_end is None else cfg.class_end
    align = cfg.groups_per_step if cfg.mode == "class" else (cfg.batch_size or 100)
    return split_range(cfg.class_start, end, index, count, align)


# ---- relabel ------------------------------------------------------------------------------------

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
    from ..labels import LabelStore
    from ..labels.store import LabelStoreWriter
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
    from ..utils.owner import entries
    if not entries(shards_dir(out)):  # only lpld's lock files are left; anything else stays
        shutil.rmtree(shards_dir(out))
    print(f"[relabel] merged {count} shards into {out}")
    return out


def _unsharded(manifest: dict[str, Any]) -> dict[str, Any]:
    """The manifest a single-process run writes, from a shard's (same keys, same order)."""
    info = manifest[SHARD_KEY]
    return {k: (info["planned_batches"] if k == "planned_batches" else v)
            for k, v in manifest.items() if k not in (SHARD_KEY, "num_batches")}
