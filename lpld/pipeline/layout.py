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
from ..validate.label_plan import label_plan_rule

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
    """One result row (a student per seed): what the report groups by. ``label_plan``: the kind of
    each student epoch (:mod:`lpld.validate.label_plan`); a ``hard`` row has no label store, so no
    prune ratio, top-k or pruning scheme (they are 0 / None) and no relabel step."""
    method: str
    ipc: int
    label_topk: int
    prune_ratio: float
    student: str | None
    scheme: tuple[str, str] | None
    label_plan: str = "soft"

    @property
    def hard_only(self) -> bool:
        return self.label_plan == "hard"

    @property
    def compression(self) -> str:
        return "no labels" if self.hard_only else compression_name(self.prune_ratio)

    @property
    def tag(self) -> str:
        parts = [f"{self.method}_ipc{self.ipc}"] + ([f"top{self.label_topk}"] if self.label_topk else [])
        if not self.hard_only:
            parts.append(self.compression)
        if self.student:
            parts.append(self.student.replace("/", "-"))
        if self.scheme:
            parts.append("_".join(self.scheme))
        if self.label_plan != "soft":
            parts.append(plan_tag(self.label_plan))
        return "_".join(parts)


def plan_tag(label_plan: str) -> str:
    """A label plan in a folder name: ``S6``, ``hard``, ``soft75-hard150-soft75``."""
    return label_plan.replace(":", "").replace(",", "-")


def make_row(method: str, ipc: int, topk: int, ratio: float, student: str | None, scheme, label_plan: str) -> Row:
    """A row; a hard-label row drops what only a label store has (ratio, top-k, scheme)."""
    if label_plan == "hard":
        return Row(method, ipc, 0, 0.0, student or None, None, "hard")
    return Row(method, ipc, int(topk or 0), float(ratio), student or None, scheme, label_plan)


def label_plans(cfg: argparse.Namespace) -> list[str]:
    plans = [str(p) for p in getattr(cfg, "label_plans", None) or ["soft"]]
    for plan in plans:
        problem = label_plan_rule(plan, {})
        if problem:
            raise InputValueError(f"label_plans: {plan!r} {problem}")
    return plans


def rows(cfg: argparse.Namespace) -> list[Row]:
    ipcs = [int(i) for i in cfg.ipcs] or [cfg.ipc]
    for method in cfg.methods:
        if method not in METHODS:
            raise InputValueError(f"unknown method {method!r}; expected one of {sorted(METHODS)}")
    schemes = [tuple(s.split("/")) for s in cfg.prune_schemes] or [None]
    for s in schemes:
        if s is not None and len(s) != 2:
            raise InputValueError(f"prune_schemes: expected METRIC/GRANULARITY, got {'/'.join(s)!r}")
    grid: list[Row] = []
    for i, m, k, s, r, sc, lp in itertools.product(ipcs, cfg.methods, cfg.label_topks, cfg.students or [None],
                                                   cfg.prune_ratios, schemes, label_plans(cfg)):
        row = make_row(m, i, k, r, s, sc, lp)
        if row not in grid:
            grid.append(row)
    for spec in cfg.extra_rows:
        parts = str(spec).split(":", 3)
        try:
            method, ratio, topk = parts[0], float(parts[1]), int(parts[2])
        except (IndexError, ValueError):
            raise InputValueError(f"extra_rows: expected METHOD:RATIO:TOPK[:PLAN] (e.g. lpld:0.975:2), got {spec!r}")
        plan = parts[3] if len(parts) > 3 else "soft"
        if method not in cfg.methods:
            raise InputValueError(f"extra_rows {spec!r}: method {method!r} is not among methods {cfg.methods}")
        problem = label_plan_rule(plan, {})
        if problem:
            raise InputValueError(f"extra_rows {spec!r}: label plan {plan!r} {problem}")
        grid += [row for row in dict.fromkeys(make_row(method, i, topk, ratio, s, sc, plan) for i, s, sc in
                                              itertools.product(ipcs, cfg.students or [None], schemes))
                 if row not in grid]
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


def _under(root: str, name: str) -> str:
    """``name`` under ``root``; a name with a folder in it (``recover/syn_data_LPLD/LPLD_tiny_...``)
    is a path of its own, from the working directory: one downloaded set is used where it lies
    while the job's other outputs stay under its output_dir."""
    return os.path.abspath(name if os.sep in name or "/" in name else os.path.join(root, name))


def image_dir(cfg, method: str, ipc: int) -> str:
    root = cfg.images_root or os.path.join(run_dir(cfg), "images")
    name = pairs(cfg.image_names, "image_names").get(method, f"{method}_ipc{{ipc}}")
    return _under(root, name.format(ipc=ipc))


def label_dir(cfg, row: Row) -> str | None:
    """The row's label store (None for a hard-label row: it has none)."""
    if row.hard_only:
        return None
    root = os.path.abspath(cfg.labels_root or os.path.join(run_dir(cfg), "labels"))
    less = cfg.label_mode == "less" and row.prune_ratio > 0
    name = pairs(cfg.label_names, "label_names").get(row.method)
    if name:
        # the authors' less_label_*.sh suffix: _ratio975 for 0.975 (sed 's/0\.//g')
        suffix = f"_ratio{str(row.prune_ratio).replace('0.', '')}" if less else ""
        return _under(root, name.format(ipc=row.ipc, ratio_suffix=suffix, topk=row.label_topk))
    tag = f"{row.method}_ipc{row.ipc}" + (f"_top{row.label_topk}" if row.label_topk else "")
    return os.path.join(root, tag + (f"_{row.compression}" if less else ""))


def student_dir(cfg, row: Row, seed: int) -> str:
    return os.path.join(run_dir(cfg), "students", row.tag, f"seed{seed}")


def val_dir(cfg) -> str:
    if cfg.val_dir:
        return cfg.val_dir
    return data_path(cfg) if cfg.dataset == "tiny" else os.path.join(data_path(cfg), "val")
