"""What each step runs: its stage function and that stage's resolved settings (:func:`step_settings`).

A stage's settings come from the pipeline config's YAML files for that stage, overridden by what
the job decides (paths, the row's ratio and top-k, the seed, the teacher's class count), through
the one resolution path of every stage (:func:`lpld.config.stage_config`).
"""
from __future__ import annotations

import argparse
import os
from typing import Any, Callable

from ..analysis.diversity import SCHEMA as DIVERSITY_SCHEMA
from ..analysis.diversity import run_diversity as measure_diversity
from ..config import AUTHORS_SECTIONS, stage_config
from ..data import DEMO_DEFAULTS, dataset_num_classes, make_demo_dataset
from ..models import read_state_dict
from ..models.teacher import infer_num_classes
from ..recover import RECOVER_SCHEMA, run_recovery
from ..recover.random_real import RANDOM_REAL_SCHEMA, run_random_real
from ..recover.rded import RDED_SCHEMA, run_rded
from ..relabel import RELABEL_SCHEMA, run_relabel
from ..report import collect_and_write, find_runs
from ..squeeze import CLASS_STATS_SCHEMA, TRAIN_SCHEMA, run_class_stats, run_teacher_training
from ..utils.log import get_logger
from ..validate import VALIDATE_SCHEMA, run_validate
from .layout import (METHODS, UNPRUNED_REPLAY, Row, data_path, image_dir, label_dir, pairs, run_dir, squeeze_dir,
                     student_dir, teacher_path, val_dir)
from .plan import Job, Step

log = get_logger(__name__)
HERE = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# image source -> (its schema, its stage function)
IMAGE_SOURCES = {"recover": (RECOVER_SCHEMA, run_recovery), "rded": (RDED_SCHEMA, run_rded),
                 "random_real": (RANDOM_REAL_SCHEMA, run_random_real)}


def _repo_path(path: str) -> str:
    return path if os.path.isabs(path) or os.path.exists(path) else os.path.join(HERE, path)


def _stage(schema, sections, files: list[str], overrides: dict[str, Any]) -> argparse.Namespace:
    return stage_config(schema, sections, [_repo_path(p) for p in files], overrides, where="pipeline")


def _common(cfg) -> dict[str, Any]:
    return {"device": cfg.device, "progress": cfg.progress, "workers": cfg.workers}


_CLASS_COUNTS: dict[tuple, int] = {}


def num_classes(cfg) -> int | None:
    """The teacher decides the class count of every later stage (a dataset subset has fewer classes
    than the dataset presets say); read once per teacher file (its path, size and mtime). Before the
    teacher exists (a dry run), the dataset's or its class subset's count."""
    path = teacher_path(cfg)
    if not os.path.isfile(path):
        return dataset_num_classes(cfg.dataset, cfg.classes) or (
            demo_settings(cfg).get("num_classes", DEMO_DEFAULTS["num_classes"]) if cfg.dataset == "demo" else None)
    st = os.stat(path)
    key = (os.path.realpath(path), st.st_size, st.st_mtime_ns)
    if key not in _CLASS_COUNTS:
        _CLASS_COUNTS[key] = infer_num_classes(read_state_dict(path), path)
    return _CLASS_COUNTS[key]


def demo_settings(cfg) -> dict[str, int]:
    """The generated demo dataset's settings (``demo_data``)."""
    return {k: int(v) for k, v in pairs(cfg.demo_data, "demo_data").items()}


def image_source(method: str) -> str:
    return METHODS[method][0]


def image_stage(cfg, method: str, ipc: int) -> tuple[Callable, argparse.Namespace]:
    source, settings = METHODS[method]
    root = image_dir(cfg, method, ipc)
    out = {"output_dir": os.path.dirname(root), "exp_name": os.path.basename(root), "ipc": ipc,
           "dataset": cfg.dataset, "progress": cfg.progress}
    schema, fn = IMAGE_SOURCES[source]
    if source == "recover":
        files = cfg.recover_configs + (cfg.sre2l_configs if method == "sre2l" else [])
        return fn, _stage(schema, ("common", "recover"), files,
                          {**out, **settings, "device": cfg.device, "teacher": teacher_path(cfg),
                           "num_classes": num_classes(cfg), "iterations": cfg.recover_iterations})
    real = {"data_path": data_path(cfg), "classes": cfg.classes}  # the real images they select from
    if source == "rded":
        return fn, _stage(schema, ("common", "recover"), cfg.rded_configs,
                          {**out, **real, "device": cfg.device, "teacher": teacher_path(cfg), "workers": cfg.workers})
    return fn, _stage(schema, ("common", "recover"), cfg.random_real_configs, {**out, **real})


def relabel_stage(cfg, row: Row) -> tuple[Callable, argparse.Namespace]:
    less = cfg.label_mode == "less"
    ns = _stage(RELABEL_SCHEMA, ("common", "relabel"), cfg.label_configs,
                {**_common(cfg), "epochs": cfg.label_epochs, "dataset": cfg.dataset, "classes": cfg.classes,
                 "num_classes": num_classes(cfg), "train_dir": image_dir(cfg, row.method, row.ipc),
                 "teacher_ckpt": cfg.relabel_teacher or teacher_path(cfg),
                 "prune_ratio": row.prune_ratio if less else 0.0, "output_dir": label_dir(cfg, row),
                 # top-k labels (LPQLD); set only when asked, so stores without it keep their settings
                 **({"label_topk": row.label_topk} if row.label_topk else {})})
    return run_relabel, ns


def validate_overrides(cfg, row: Row, seed: int) -> dict[str, Any]:
    out = student_dir(cfg, row, seed)
    metric_gran = row.scheme or (UNPRUNED_REPLAY if row.prune_ratio == 0 and cfg.dataset not in
                                 ("in21k", "imagenet21k") else None)
    # label_epochs: relabel's epochs and the student's label pool, one value (the authors' shared
    # common.basic.epochs)
    return {**_common(cfg), "epochs": cfg.label_epochs, "train_epochs": cfg.student_epochs, "dataset": cfg.dataset,
            "classes": cfg.classes, "num_classes": num_classes(cfg),
            "train_dir": image_dir(cfg, row.method, row.ipc), "label_dir": label_dir(cfg, row),
            "label_plan": row.label_plan,
            "val_dir": val_dir(cfg), "prune_ratio": row.prune_ratio, "seed": seed, "model": row.student,
            **(dict(zip(("prune_metric", "granularity"), metric_gran)) if metric_gran else {}),
            "output_dir": out, "resume": os.path.isfile(os.path.join(out, "checkpoint.pth"))}


def validate_stage(cfg, row: Row, seed: int) -> tuple[Callable, argparse.Namespace]:
    return run_validate, _stage(VALIDATE_SCHEMA, ("common", "validate"), cfg.label_configs,
                                validate_overrides(cfg, row, seed))


def squeeze_stage(cfg, which: str) -> tuple[Callable, argparse.Namespace]:
    """``which``: ``teacher`` (training) or ``class_stats`` (the class-statistics pass)."""
    sq = squeeze_dir(cfg)
    base = {**_common(cfg), "dataset": cfg.dataset, "data_path": data_path(cfg), "classes": cfg.classes}
    if which == "teacher":
        return run_teacher_training, _stage(
            TRAIN_SCHEMA, ("common", "squeeze"), cfg.squeeze_configs + cfg.teacher_train_configs,
            {**base, "output_dir": sq, "epochs": cfg.teacher_epochs,
             "resume": os.path.isfile(os.path.join(sq, "checkpoint.pth"))})
    return run_class_stats, _stage(CLASS_STATS_SCHEMA, ("common", "squeeze"), cfg.squeeze_configs,
                                   {**base, "weights": os.path.join(sq, "teacher.pth"), "output": teacher_path(cfg)})


def diversity_stage(job: Job) -> argparse.Namespace:
    """Within-class diversity (:mod:`lpld.analysis.diversity`) of every image set of the job, in the
    features of the class-BN teacher, built as recovery builds it (its model, stem and image size
    in the recover configs, whether squeeze trained it or it was given)."""
    cfg = job.cfg
    teacher = _stage(RECOVER_SCHEMA, ("common", "recover"), cfg.recover_configs, {})
    model = {k: getattr(teacher, k) for k in ("model", "tiny_stem", "image_size")}
    sets = [f"{s.method}_ipc{s.ipc}={image_dir(cfg, s.method, s.ipc)}" for s in job.of("images")]
    return _stage(DIVERSITY_SCHEMA, AUTHORS_SECTIONS, [], {
        **model, "dataset": cfg.dataset, "weights": teacher_path(cfg), "syn": sets, "real": data_path(cfg),
        "device": cfg.device, "progress": cfg.progress, "workers": cfg.workers or 0,
        "output_dir": os.path.join(run_dir(cfg), "diversity")})


def write_report(job: Job) -> list[dict]:
    """The report of this plan's students only: a student folder left from a seed or row no longer
    in the plan is named, never averaged in."""
    cfg = job.cfg
    planned = [student_dir(cfg, s.row, s.seed) for s in job.of("validate")]
    students = os.path.join(run_dir(cfg), "students")
    stray = sorted(set(find_runs([students])) - set(planned)) if os.path.isdir(students) else []
    if stray:
        log.info(f"report: {len(stray)} student folder(s) not in this plan, left out: {', '.join(stray)}")
    div = os.path.join(run_dir(cfg), "diversity", "diversity_summary.json")
    return collect_and_write([students], run_dir(cfg), runs=planned,
                             diversity=div if os.path.isfile(div) else None, title=cfg.table or None)


def step_settings(job: Job, step: Step) -> tuple[Callable, argparse.Namespace | None]:
    """(function, its resolved settings) of ``step``: exactly what the step runs. A step the pipeline
    runs itself (the demo data, diversity, the report) has no stage settings: its function takes
    them from the job."""
    cfg = job.cfg
    if step.stage == "data":
        return (lambda _: make_demo_dataset(data_path(cfg), **demo_settings(cfg))), None
    if step.stage in ("teacher", "class_stats"):
        return squeeze_stage(cfg, step.stage)
    if step.stage == "images":
        return image_stage(cfg, step.method, step.ipc)
    if step.stage == "diversity":
        return (lambda _: measure_diversity(diversity_stage(job))), None
    if step.stage == "report":
        return (lambda _: write_report(job)), None
    if step.stage == "relabel":
        return relabel_stage(cfg, step.row)
    if step.stage == "validate":
        return validate_stage(cfg, step.row, step.seed)
    raise KeyError(f"step {step.name!r} has no stage {step.stage!r}")
