"""Where the pipeline's job puts things: its rows (:class:`Row`, :func:`rows`) and the folder of
every output (data, teacher, image sets, label stores, students), from the pipeline config alone.
:mod:`lpld.pipeline.plan` makes the job's steps of them."""
from __future__ import annotations

import argparse
import dataclasses
import itertools
import os

from ..config import compression_name
from ..utils.errors import InputValueError

# method -> (image source, recovery settings). "recover": model inversion (lpld.recover), the others
# select real images (lpld.recover.rded, lpld.recover.random_real).
METHODS = {
    "lpld": ("recover", {"mode": "class"}),                          # class-wise batches + class-wise BN
    "sre2l": ("recover", {}),                                        # sre2l_configs: across-class batches
    "cb_global": ("recover", {"mode": "class", "bn_target": "global"}),  # Table 4 ablation
    "rded": ("rded", {}),
    "random_real": ("random_real", {}),
}
# Full labels are replayed epoch by epoch in stored order, as the authors' scripts do for ratio 0
# ("do not use random sampling for 0.0 ratio"; main_table_*.sh), except on ImageNet-21K-P
# (main_table_in21k.sh keeps random / batch_to_epoch).
UNPRUNED_REPLAY = ("order", "epoch")


def pairs(items: list[str], what: str) -> dict[str, str]:
    """``["KEY=VALUE", ...]`` as a dict."""
    out = {}
    for item in items:
        key, sep, value = str(item).partition("=")
        if not sep:
            raise ValueError(f"{what}: expected KEY=VALUE, got {item!r}")
        out[key] = value
    return out


@dataclasses.dataclass(frozen=True)
class Row:
    """One result row (a student per seed): what the report groups by."""
    method: str
    ipc: int
    label_topk: int
    prune_ratio: float
    student: str | None
    scheme: tuple[str, str] | None

    @property
    def compression(self) -> str:
        return compression_name(self.prune_ratio)

    @property
    def tag(self) -> str:
        parts = [f"{self.method}_ipc{self.ipc}"] + ([f"top{self.label_topk}"] if self.label_topk else [])
        parts.append(self.compression)
        if self.student:
            parts.append(self.student.replace("/", "-"))
        if self.scheme:
            parts.append("_".join(self.scheme))
        return "_".join(parts)


def rows(cfg: argparse.Namespace) -> list[Row]:
    ipcs = [int(i) for i in cfg.ipcs] or [cfg.ipc]
    for method in cfg.methods:
        if method not in METHODS:
            raise InputValueError(f"unknown method {method!r}; expected one of {sorted(METHODS)}")
    schemes = [tuple(s.split("/")) for s in cfg.prune_schemes] or [None]
    for s in schemes:
        if s is not None and len(s) != 2:
            raise InputValueError(f"prune_schemes: expected METRIC/GRANULARITY, got {'/'.join(s)!r}")
    grid = [Row(m, i, int(k or 0), float(r), s or None, sc) for i, m, k, s, r, sc in itertools.product(
        ipcs, cfg.methods, cfg.label_topks, cfg.students or [None], cfg.prune_ratios, schemes)]
    for spec in cfg.extra_rows:
        parts = str(spec).split(":")
        try:
            method, ratio, topk = parts[0], float(parts[1]), int(parts[2])
        except (IndexError, ValueError):
            raise InputValueError(f"extra_rows: expected METHOD:RATIO:TOPK (e.g. lpld:0.975:2), got {spec!r}")
        if method not in cfg.methods:
            raise InputValueError(f"extra_rows {spec!r}: method {method!r} is not among methods {cfg.methods}")
        grid += [row for row in (Row(method, i, topk, ratio, s or None, sc) for i, s, sc in itertools.product(
            ipcs, cfg.students or [None], schemes)) if row not in grid]
    return grid


def run_dir(cfg) -> str:
    """The job's output folder (``output_dir``), absolute."""
    return os.path.abspath(cfg.output_dir)


def data_path(cfg) -> str:
    return cfg.data_path or os.path.join(run_dir(cfg), "data")


def squeeze_dir(cfg) -> str:
    return os.path.abspath(cfg.squeeze_dir or os.path.join(run_dir(cfg), "squeeze"))


def teacher_path(cfg) -> str:
    return cfg.teacher or os.path.join(squeeze_dir(cfg), "teacher_class_bn.pth")


def image_dir(cfg, method: str, ipc: int) -> str:
    root = cfg.images_root or os.path.join(run_dir(cfg), "images")
    name = pairs(cfg.image_names, "image_names").get(method, f"{method}_ipc{{ipc}}")
    return os.path.join(os.path.abspath(root), name.format(ipc=ipc))


def label_dir(cfg, row: Row) -> str:
    root = os.path.abspath(cfg.labels_root or os.path.join(run_dir(cfg), "labels"))
    less = cfg.label_mode == "less" and row.prune_ratio > 0
    name = pairs(cfg.label_names, "label_names").get(row.method)
    if name:
        # the authors' less_label_*.sh suffix: _ratio975 for 0.975 (sed 's/0\.//g')
        suffix = f"_ratio{str(row.prune_ratio).replace('0.', '')}" if less else ""
        return os.path.join(root, name.format(ipc=row.ipc, ratio_suffix=suffix, topk=row.label_topk))
    tag = f"{row.method}_ipc{row.ipc}" + (f"_top{row.label_topk}" if row.label_topk else "")
    return os.path.join(root, tag + (f"_{row.compression}" if less else ""))


def student_dir(cfg, row: Row, seed: int) -> str:
    return os.path.join(run_dir(cfg), "students", row.tag, f"seed{seed}")


def val_dir(cfg) -> str:
    if cfg.val_dir:
        return cfg.val_dir
    return data_path(cfg) if cfg.dataset == "tiny" else os.path.join(data_path(cfg), "val")
