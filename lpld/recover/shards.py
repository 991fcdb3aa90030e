"""Recovery over class ranges: shard ``i`` of ``n`` synthesises a contiguous range of classes into
the one image folder.

Each class draws from its own generator seeded by (seed, class) and units are fixed by the class
ids (:mod:`lpld.recover.run`), so any split writes the same JPEG bytes; boundaries fall on unit
boundaries so no shard recomputes another's classes.
"""
from __future__ import annotations

import argparse
from typing import Any

from ..models import read_state_dict
from ..models.teacher import infer_num_classes
from ..utils.log import get_logger
from ..utils.ranges import split_range
from .run import run_recovery

log = get_logger(__name__)


def recover_range(cfg: argparse.Namespace, index: int, count: int) -> tuple[int, int]:
    """Classes ``[start, end)`` of shard ``index`` of ``count`` within the config's class range,
    boundaries on unit boundaries (class mode: groups_per_step classes; sre2l: batch_size blocks)."""
    num_classes = cfg.num_classes
    if num_classes is None:
        num_classes = infer_num_classes(read_state_dict(cfg.teacher), cfg.teacher)
    end = num_classes if cfg.class_end is None else cfg.class_end
    align = cfg.groups_per_step if cfg.mode == "class" else (cfg.batch_size or 100)
    return split_range(cfg.class_start, end, index, count, align)


def run_recovery_shard(cfg: argparse.Namespace, shard: tuple[int, int], **kwargs: Any) -> str | None:
    """Shard ``shard = (index, count)`` of the recovery ``cfg`` (the config it would run unsharded)."""
    index, count = shard
    start, end = recover_range(cfg, index, count)
    if start >= end:
        log.info(f"[shard {index}/{count}] no class in this shard")
        return None
    return run_recovery(argparse.Namespace(**{**vars(cfg), "class_start": start, "class_end": end}), **kwargs)
