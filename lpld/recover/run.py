"""Recover a distilled dataset: plan the groups, optimise them, write class folders, log, resume.

Work is split into *units* that complete whole classes, so a crash loses at most one unit:

* class mode (LPLD): a unit is ``groups_per_step`` classes; class c contributes ``ipc / batch_size``
  groups of ``batch_size`` images labelled c, keyed (c, j), matched to class c's statistics.
* sre2l mode (baseline): classes are cut into blocks of ``batch_size`` consecutive classes, as SRe2L's
  ``range(0, num_classes, batch_size)``; group j of a block holds one image of every class of the
  block and is keyed (block start, j); SRe2L optimises one ipc index per run, we batch
  ``groups_per_step`` ipc indices per step. A block's class folders are written when its ipc groups
  are done; a unit is one chunk of ipc indices.

One result whatever the sharding or resumption: every group draws its noise and augmentation from
its own generator seeded by (seed, group key), and units are fixed by the class ids alone --
class mode unit k is classes [k * groups_per_step, (k + 1) * groups_per_step), sre2l blocks start
at multiples of batch_size, both clipped to the teacher's classes, not to the requested range.
A job over [class_start, class_end) computes every unit that holds one of its unfinished classes,
whole (classes outside its range or already on disk are computed again and not written), so the
arithmetic of every step -- and so every JPEG byte -- is the same in one job, in shards over
several processes, and after a kill. (Shard boundaries at multiples of groups_per_step avoid the
recomputation.) Images made with another groups_per_step agree to float rounding, not bit for
bit: the teacher's kernels reduce in another order for another batch size.

Concurrent shards may write into one folder (SLURM job arrays over class ranges): each class is
locked while its unit runs (``.lpld.new{c:03d}.lock``), so two processes never write one class.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import time

import torch

from ..data.transforms import normalization
from ..models import read_state_dict
from ..models.teacher import TeacherInfo, load_teacher as load_checkpoint_teacher
from ..utils.errors import InputValueError
from ..utils.fingerprint import short
from ..utils.io import atomic_json_dump, ensure_writable_dir, human_bytes, on_disk, require_free_space
from ..utils.lock import lock_output
from ..utils.log import get_logger
from ..utils.metrics import MetricsLog
from ..utils.progress import progress_bar, write
from ..utils.runtime import resolve_device
from .io import class_complete, remove_stale_temporaries, save_class
from .synthesize import Group, Recoverer, RecoverySettings, denormalize_to_uint8

log = get_logger(__name__)

DEFINING_KEYS = ("mode", "bn_target", "dataset", "model", "tiny_stem", "num_classes", "image_size", "ipc", "batch_size",
                 "iterations", "lr", "r_bn", "first_bn_multiplier", "adam_beta1", "adam_beta2", "adam_eps",
                 "jitter_min", "jitter_max", "crop_scale_min", "crop_scale_max", "clip", "seed", "augment_draw",
                 "teacher_sha256", "groups_per_step")
# Upper estimate of a recovered JPEG (quality 75): uniform noise, the least compressible image,
# measured at 0.20-0.25 bytes per pixel value (64 and 224 px) plus ~600 bytes of headers. Only used
# to refuse, before any work, a run whose images cannot fit.
JPEG_BYTES_PER_VALUE = 0.25
JPEG_HEADER_BYTES = 700


def bn_target(cfg: argparse.Namespace) -> str:
    """Which BN statistics the images are matched to: "class" or "global"."""
    target = getattr(cfg, "bn_target", "auto")
    if target == "auto":
        return "class" if cfg.mode == "class" else "global"
    if target == "class" and cfg.mode != "class":
        raise ValueError("--bn-target class needs --mode class: an across-class (sre2l) batch has no single "
                         "class whose statistics it could match")
    return target


def load_teacher(cfg: argparse.Namespace) -> tuple[torch.nn.Module, TeacherInfo]:
    """Build the teacher from ``cfg.teacher``; class-wise matching needs class-wise BN statistics in it."""
    if not cfg.teacher:
        raise InputValueError("--teacher is required: the class-BN teacher checkpoint (squeeze/class_stats.py "
                              "output, or the authors' resnet18_0.pth / resnet18_tiny_0.pth)")
    class_wise = bn_target(cfg) == "class"
    if class_wise and not any(k.endswith("class_running_mean") for k in read_state_dict(cfg.teacher)):
        raise InputValueError(f"teacher {cfg.teacher} has no class-wise BN statistics (no 'class_running_mean' "
                              f"buffers), which class mode (LPLD) matches. Run squeeze/class_stats.py --weights "
                              f"{cfg.teacher} to add them, or use --mode sre2l to match global statistics.")
    return load_checkpoint_teacher(cfg.model, cfg.teacher, num_classes=cfg.num_classes, tiny_stem=cfg.tiny_stem,
                                   class_aware=class_wise)


def check_config(cfg: argparse.Namespace, num_classes: int) -> tuple[int, int]:
    """Validate ranges; returns (class_end, batch_size) with defaults filled in."""
    end = num_classes if cfg.class_end is None else cfg.class_end
    if not 0 <= cfg.class_start < end <= num_classes:
        raise InputValueError(f"class range [{cfg.class_start}, {end}) is invalid for a teacher with {num_classes} "
                         f"classes: need 0 <= --class-start < --class-end <= {num_classes}")
    for name in ("ipc", "iterations", "groups_per_step", "image_size"):
        if getattr(cfg, name) < 1:
            raise InputValueError(f"--{name.replace('_', '-')} must be >= 1; got {getattr(cfg, name)}")
    if cfg.mode == "class":
        batch = cfg.ipc if cfg.batch_size is None else cfg.batch_size  # only unset means ipc (0 is an error)
        if batch < 1 or cfg.ipc % batch:
            raise InputValueError(f"--batch-size {batch} must divide --ipc {cfg.ipc} in class mode (each class is "
                             f"recovered in ipc / batch_size batches of equal size)")
    else:
        batch = 100 if cfg.batch_size is None else cfg.batch_size
        if batch < 1:
            raise InputValueError(f"--batch-size must be >= 1; got {batch}")
    if not (0 < cfg.crop_scale_min <= cfg.crop_scale_max <= 1) or cfg.jitter_min > cfg.jitter_max:
        raise InputValueError("need 0 < crop_scale_min <= crop_scale_max <= 1 and jitter_min <= jitter_max")
    return end, batch


def settings_from(cfg: argparse.Namespace) -> RecoverySettings:
    mean, std = normalization(cfg.dataset)
    return RecoverySettings(
        image_size=cfg.image_size, iterations=cfg.iterations, lr=cfg.lr, r_bn=cfg.r_bn,
        first_bn_multiplier=cfg.first_bn_multiplier, betas=(cfg.adam_beta1, cfg.adam_beta2), eps=cfg.adam_eps,
        crop_scale=(cfg.crop_scale_min, cfg.crop_scale_max), jitter=(cfg.jitter_min, cfg.jitter_max),
        mean=tuple(mean), std=tuple(std), clip=cfg.clip, augment_draw=cfg.augment_draw, amp=cfg.amp,
        channels_last=cfg.channels_last, seed=cfg.seed, log_every=cfg.log_every, progress=cfg.progress)


def write_manifest(root: str, cfg: argparse.Namespace, teacher: TeacherInfo, batch: int) -> dict:
    """``recover.json``: the settings that define the images, the teacher's content hash and class
    list. A resumed (or parallel) run must agree; the teacher is compared by content, not by path."""
    values = {k: getattr(cfg, k, None) for k in DEFINING_KEYS}
    values.update(num_classes=teacher.num_classes, batch_size=batch, bn_target=bn_target(cfg),
                  teacher_sha256=teacher.sha256)
    if cfg.augment_draw != "shared":
        values["groups_per_step"] = None  # per-group draws: the images do not depend on the grouping
    manifest = {**values, "teacher": os.path.abspath(cfg.teacher), "classes": teacher.classes,
                "normalization": normalization(cfg.dataset), "layout": "new{c:03d}/class{c:03d}_id{i:03d}.jpg"}
    path = os.path.join(root, "recover.json")
    if os.path.exists(path):
        with open(path) as f:
            old = json.load(f)
        if "teacher_sha256" not in old:  # written before content hashes: compare what it has
            log.warning(f"{path} records no content hash of its teacher; checking the teacher by path only")
            values = {k: v for k, v in values.items() if k in old}
            values["teacher"] = manifest["teacher"]
        if old.get("teacher_sha256") and old["teacher_sha256"] != teacher.sha256:
            raise InputValueError(f"teacher mismatch: {path} was made with teacher sha256 "
                                  f"{short(old['teacher_sha256'])}, but {cfg.teacher} has sha256 "
                                  f"{short(teacher.sha256)}. Use the same teacher to resume, or another --exp-name.")
        diff = {k: (old.get(k), v) for k, v in values.items() if old.get(k) != v}
        if diff:
            raise InputValueError(f"{path} was written with other settings (key: (existing, now)): {diff}. "
                                  f"Use another --exp-name, or make the settings agree to resume.")
        return old
    atomic_json_dump(manifest, path)
    return manifest


def plan_units(cfg: argparse.Namespace, start: int, end: int, batch: int, root: str, num_classes: int | None = None):
    """Yield (groups, classes_to_write, block) per unit, skipping units whose classes in
    [start, end) are all complete. Units are aligned to class 0 and clipped to ``num_classes``
    (see the module docstring), so their composition does not depend on the range."""
    num_classes = end if num_classes is None else num_classes
    todo = {c for c in range(start, end) if not class_complete(root, c, cfg.ipc)}
    if cfg.mode == "class":
        per_class = cfg.ipc // batch
        k = cfg.groups_per_step
        for u in range(start - start % k, end, k):
            classes = list(range(u, min(u + k, num_classes)))
            to_write = [c for c in classes if c in todo]
            if not to_write:
                continue
            groups = [Group(key=(0, c, j), labels=[c] * batch, bn_class=c) for c in classes for j in range(per_class)]
            yield groups, to_write, None
        return
    for b0 in range(start - start % batch, end, batch):
        block = list(range(b0, min(b0 + batch, num_classes)))
        if not todo.intersection(block):
            continue
        chunks = range(0, cfg.ipc, cfg.groups_per_step)
        for k in chunks:
            groups = [Group(key=(1, b0, j), labels=block) for j in range(k, min(k + cfg.groups_per_step, cfg.ipc))]
            last = k + cfg.groups_per_step >= cfg.ipc
            yield groups, [c for c in block if c in todo] if last else [], block


@contextlib.contextmanager
def locked_classes(root: str, classes):
    """Hold the locks of ``classes`` (see the module docstring) and clear their stale temporaries."""
    locks = []
    try:
        for c in classes:
            locks.append(lock_output(root, f"recovery of class {c} in {root}", key=f"new{c:03d}"))
        remove_stale_temporaries(root, classes)
        yield
    finally:
        for lock in locks:
            lock.release()


def run_recovery(cfg: argparse.Namespace) -> str:
    """Synthesise classes [class_start, class_end) into ``<output_dir>/<exp_name>``; returns that folder."""
    root = os.path.join(cfg.output_dir, cfg.exp_name)
    ensure_writable_dir(root, "recovery output directory", owner="images")
    device = resolve_device(cfg.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # every step has the same shapes
    teacher, info = load_teacher(cfg)
    num_classes = info.num_classes
    end, batch = check_config(cfg, num_classes)
    write_manifest(root, cfg, info, batch)
    settings = settings_from(cfg)
    units = list(plan_units(cfg, cfg.class_start, end, batch, root, num_classes))
    done_before = sum(class_complete(root, c, cfg.ipc) for c in range(cfg.class_start, end))
    remaining = (end - cfg.class_start) - done_before
    jpeg = int(cfg.image_size ** 2 * 3 * JPEG_BYTES_PER_VALUE) + JPEG_HEADER_BYTES
    needed = on_disk(root, [jpeg] * (remaining * cfg.ipc) + [4096] * remaining)  # + one folder per class
    require_free_space(root, needed, "recovered images")
    recoverer = Recoverer(teacher.to(device), settings, bn_target(cfg), device,
                          compile_model=cfg.compile)
    metrics_log = MetricsLog(os.path.join(root, f"recover_log_{cfg.class_start:05d}-{end:05d}"))
    log.info(f"recover: {cfg.mode} mode, classes [{cfg.class_start}, {end}) of {num_classes}, ipc {cfg.ipc}, "
             f"{done_before} already complete, {len(units)} steps of up to {cfg.groups_per_step} groups, "
             f"about {human_bytes(needed)} to write "
             f"-> {root}")
    block_store: dict[int, torch.Tensor] = {}  # sre2l: class -> [ipc, H, W, 3] uint8 being filled
    block_stats: dict[int, list] = {}
    try:
        for groups, to_write, block in progress_bar(units, desc="recover", disable=not cfg.progress):
            t0 = time.time()
            with locked_classes(root, to_write if cfg.mode == "class" else [c for c in block if c in
                                                                          range(cfg.class_start, end)]):
                if any(class_complete(root, c, cfg.ipc) for c in to_write):  # written meanwhile by a shard
                    to_write = [c for c in to_write if not class_complete(root, c, cfg.ipc)]
                    if not to_write and cfg.mode == "class":
                        continue
                result = recoverer.run(groups, desc=f"classes {groups[0].labels[0]}..{groups[-1].labels[-1]}")
                pixels = denormalize_to_uint8(result.images, settings.mean, settings.std)
                seconds = time.time() - t0
                if cfg.mode == "class":
                    _write_class_mode(root, cfg, groups, to_write, result, pixels, seconds, metrics_log)
                else:
                    _collect_sre2l(cfg, groups, block, result, pixels, seconds, block_store, block_stats)
                    for c in to_write:
                        save_class(root, c, block_store.pop(c), cfg.jpeg_quality)
                        metrics_log.append(_sre2l_record(c, block_stats.pop(c), cfg))
                    if to_write or (groups[-1].key[2] == cfg.ipc - 1):
                        block_store.clear()
                        block_stats.clear()
    finally:
        recoverer.close()
    return root


def _record(c: int, cfg, ce, correct, bn, ce_last, bn_last, seconds: float) -> dict:
    rec = {"class": c, "mode": cfg.mode, "images": int(correct.numel()), "ce": round(float(ce.mean()), 6),
           "bn_loss": round(float(bn.mean()), 6), "top1": round(100.0 * float(correct.float().mean()), 3),
           "ce_last_step": round(float(ce_last.mean()), 6), "bn_loss_last_step": round(float(bn_last.mean()), 6),
           "seconds": round(seconds, 3)}
    write(f"class {c:5d}: ce {rec['ce']:.4f}  bn {rec['bn_loss']:.4f}  teacher top-1 {rec['top1']:.1f}%")
    return rec


def _write_class_mode(root, cfg, groups, classes, result, pixels, seconds, metrics_log) -> None:
    """Save the classes ``classes`` of a step (its groups are contiguous per class, in class order)."""
    per_class = cfg.ipc
    per_group = len(groups[0].labels)
    groups_per_class = per_class // per_group
    step_classes = list(dict.fromkeys(g.bn_class for g in groups))
    for c in classes:
        idx = step_classes.index(c)
        sl = slice(idx * per_class, (idx + 1) * per_class)
        gs = slice(idx * groups_per_class, (idx + 1) * groups_per_class)
        save_class(root, c, pixels[sl], cfg.jpeg_quality)
        metrics_log.append(_record(c, cfg, result.ce[sl], result.correct[sl], result.bn[gs], result.ce_last[gs],
                           result.bn_last[gs], seconds / len(classes)))


def _collect_sre2l(cfg, groups, block, result, pixels, seconds, store, stats) -> None:
    n = len(block)
    for g_idx, g in enumerate(groups):
        j = g.key[2]
        for pos, c in enumerate(block):
            i = g_idx * n + pos
            if c not in store:
                store[c] = torch.zeros((cfg.ipc,) + tuple(pixels.shape[1:]), dtype=torch.uint8)
                stats[c] = []
            store[c][j] = pixels[i]
            stats[c].append((float(result.ce[i]), bool(result.correct[i]), float(result.bn[g_idx]),
                             float(result.ce_last[g_idx]), float(result.bn_last[g_idx]),
                             seconds / (len(groups) * n)))


def _sre2l_record(c: int, rows: list, cfg) -> dict:
    cols = list(zip(*rows))
    t = [torch.tensor(col, dtype=torch.float64) for col in cols]
    return _record(c, cfg, t[0], t[1], t[2], t[3], t[4], float(sum(cols[5])))

