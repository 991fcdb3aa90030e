"""The main job: every stage in order, then a table of student accuracy vs label storage.

squeeze (teacher + class-wise BN statistics) -> recover (LPLD class-wise images and the SRe2L
across-class baseline) -> relabel (one label store per method and compression, generating only the
kept share of the batches: the authors' "less label" mode) -> validate (a student per method and
compression) -> ``results.{csv,json,md}``.

Every step is skipped when its output is complete, and the long ones resume where they stopped, so
re-running the same command after an interruption finishes the job.
"""
from __future__ import annotations

import argparse
import json
import os
import time
from typing import Any, Callable

from .config import Option, load_yaml, parse_config, resolve
from .utils.io import atomic_json_dump, atomic_write_text

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

RECOVER_MODES = {"lpld": "class", "sre2l": "sre2l"}
# Full labels (1x) are replayed epoch by epoch in stored order, as the authors' less_label_*.sh
# scripts do for ratio 0 (prune_metric order, granularity epoch); pruned runs use the config's.
UNPRUNED_REPLAY = {"prune_metric": "order", "granularity": "epoch"}

PIPELINE_SCHEMA = {
    "output_dir": Option("outputs/demo", str, "everything the job writes goes under this folder"),
    "device": Option("auto", str, "auto | cpu | cuda | cuda:N"),
    "dataset": Option("demo", str, "demo (generated), tiny, imagenet ...: passed to every stage"),
    "data_path": Option(None, str, "real dataset root (default for demo: <output_dir>/data, generated)"),
    "val_dir": Option(None, str, "validation set for the students (default: <data_path>/val, or the "
                                 "Tiny-ImageNet root for tiny)"),
    "squeeze_configs": Option(["squeeze/configs/demo.yaml"], list,
                              "YAML files shared by teacher training and the class-statistics pass"),
    "teacher_train_configs": Option(["squeeze/configs/demo_train.yaml"], list,
                                    "YAML files with the training-only keys (epochs, lr ...)"),
    "teacher": Option(None, str, "an existing class-BN teacher (skips squeeze), e.g. the authors' "
                                 "resnet18_tiny_0.pth"),
    "recover_configs": Option(["recover/configs/demo.yaml"], list, "YAML files of the recovery stage"),
    "sre2l_configs": Option(["recover/configs/sre2l.yaml"], list,
                            "YAML overlays that turn recovery into the SRe2L baseline"),
    "label_configs": Option(["relabel_and_validate/configs/demo.yaml"], list,
                            "YAML files of relabel and validate (authors' common/relabel/validate layout)"),
    "methods": Option(["lpld", "sre2l"], list, "lpld (class-wise batching) and/or sre2l (across classes)"),
    "prune_ratios": Option([0.0, 0.9, 0.975], list, "label pruning ratios: 0 = 1x, 0.9 = 10x, 0.975 = 40x"),
    "ipc": Option(10, int, "images per class to synthesise"),
    "workers": Option(None, int, "data-loading workers for every stage (default: each config's)"),
    "progress": Option(True, bool, "tqdm progress bars"),
}


def _stage_cfg(schema, sections, files: list[str], overrides: dict[str, Any]) -> argparse.Namespace:
    layers = [(path, load_yaml(_repo_path(path), sections)) for path in files]
    return resolve(schema, layers + [("pipeline", {k: v for k, v in overrides.items() if v is not None})])


def _repo_path(path: str) -> str:
    return path if os.path.isabs(path) or os.path.exists(path) else os.path.join(HERE, path)


def _step(name: str, done: bool, fn: Callable[[], Any]) -> Any:
    if done:
        print(f"[skip] {name}: already complete")
        return None
    print(f"[run ] {name}")
    t0 = time.time()
    out = fn()
    print(f"[done] {name} in {time.time() - t0:.1f}s")
    return out


def compression_name(prune_ratio: float) -> str:
    return f"{round(1 / (1 - prune_ratio))}x" if prune_ratio < 1 else "inf"


def run_pipeline(cfg: argparse.Namespace) -> list[dict[str, Any]]:
    from .data import make_demo_dataset
    from .recover import RECOVER_SCHEMA, run_recovery
    from .relabel import RELABEL_SCHEMA, run_relabel
    from .squeeze import CLASS_STATS_SCHEMA, TRAIN_SCHEMA, run_class_stats, run_teacher_training
    from .validate import VALIDATE_SCHEMA, run_validate

    out = os.path.abspath(cfg.output_dir)
    common = {"device": cfg.device, "progress": cfg.progress, "workers": cfg.workers}
    data_path = cfg.data_path or os.path.join(out, "data")
    if cfg.dataset == "demo" and not cfg.data_path:
        _step("demo dataset", os.path.isfile(os.path.join(data_path, "demo.json")),
              lambda: make_demo_dataset(data_path))

    # 1. squeeze: teacher, then class-wise BN statistics
    teacher = cfg.teacher
    if teacher is None:
        sq_dir = os.path.join(out, "squeeze")
        teacher = os.path.join(sq_dir, "teacher_class_bn.pth")
        train_cfg = _stage_cfg(TRAIN_SCHEMA, ("common", "squeeze"), cfg.squeeze_configs + cfg.teacher_train_configs,
                               {**common, "dataset": cfg.dataset, "data_path": data_path, "output_dir": sq_dir,
                                "resume": os.path.isfile(os.path.join(sq_dir, "checkpoint.pth"))})
        _step("squeeze: teacher training", os.path.isfile(os.path.join(sq_dir, "teacher.pth")),
              lambda: run_teacher_training(train_cfg))
        stats_cfg = _stage_cfg(CLASS_STATS_SCHEMA, ("common", "squeeze"), cfg.squeeze_configs,
                               {**common, "dataset": cfg.dataset, "data_path": data_path,
                                "weights": os.path.join(sq_dir, "teacher.pth"), "output": teacher})
        _step("squeeze: class-wise BN statistics", os.path.isfile(teacher), lambda: run_class_stats(stats_cfg))

    # The teacher decides the class count for every later stage (a dataset subset has fewer classes
    # than the dataset presets say).
    from .models import read_state_dict
    from .recover.run import infer_num_classes
    num_classes = infer_num_classes(read_state_dict(teacher), teacher)
    common["num_classes"] = num_classes

    # 2. recover: one image set per method (recovery itself skips finished classes)
    image_dirs = {}
    for method in cfg.methods:
        if method not in RECOVER_MODES:
            raise ValueError(f"unknown method {method!r}; expected one of {sorted(RECOVER_MODES)}")
        files = cfg.recover_configs + (cfg.sre2l_configs if method == "sre2l" else [])
        rec_cfg = _stage_cfg(RECOVER_SCHEMA, ("common", "recover"), files,
                             {"device": cfg.device, "progress": cfg.progress, "num_classes": num_classes,
                              "dataset": cfg.dataset, "teacher": teacher, "ipc": cfg.ipc,
                              "mode": RECOVER_MODES[method], "output_dir": os.path.join(out, "recover"),
                              "exp_name": f"{method}_ipc{cfg.ipc}"})
        image_dirs[method] = _step(f"recover: {method} images", False, lambda c=rec_cfg: run_recovery(c))

    # 3. relabel + validate: per method and compression
    val_dir = cfg.val_dir or (data_path if cfg.dataset == "tiny" else os.path.join(data_path, "val"))
    rows = []
    for method in cfg.methods:
        for ratio in [float(r) for r in cfg.prune_ratios]:
            tag = f"{method}_{compression_name(ratio)}"
            store = os.path.join(out, "labels", tag)
            rel_cfg = _stage_cfg(RELABEL_SCHEMA, ("common", "relabel"), cfg.label_configs,
                                 {**common, "dataset": cfg.dataset, "train_dir": image_dirs[method],
                                  "teacher_ckpt": teacher, "prune_ratio": ratio, "output_dir": store})
            _step(f"relabel: {tag}", False, lambda c=rel_cfg: run_relabel(c))
            student_dir = os.path.join(out, "students", tag)
            final = os.path.join(student_dir, "final.json")
            val_cfg = _stage_cfg(VALIDATE_SCHEMA, ("common", "validate"), cfg.label_configs,
                                 {**common, "dataset": cfg.dataset, "train_dir": image_dirs[method],
                                  "label_dir": store, "val_dir": val_dir, "prune_ratio": ratio,
                                  **(UNPRUNED_REPLAY if ratio == 0 else {}),
                                  "output_dir": student_dir,
                                  "resume": os.path.isfile(os.path.join(student_dir, "checkpoint.pth"))})
            _step(f"validate: {tag}", os.path.isfile(final), lambda c=val_cfg: run_validate(c))
            with open(final) as f:
                metrics = json.load(f)
            rows.append({"method": method, "compression": compression_name(ratio), "prune_ratio": ratio,
                         "top1": round(float(metrics["top1"]), 2), "top5": round(float(metrics["top5"]), 2),
                         "label_bytes": int(metrics["label_bytes_store"])})
    write_results(out, rows)
    return rows


def write_results(out: str, rows: list[dict[str, Any]]) -> None:
    atomic_json_dump(rows, os.path.join(out, "results.json"))
    fields = ["method", "compression", "prune_ratio", "top1", "top5", "label_bytes"]
    lines = [",".join(fields)] + [",".join(str(r[f]) for f in fields) for r in rows]
    atomic_write_text(os.path.join(out, "results.csv"), "\n".join(lines) + "\n")
    md = ["| method | compression | student top-1 (%) | top-5 (%) | label storage |",
          "| --- | --- | --- | --- | --- |"]
    md += [f"| {r['method']} | {r['compression']} | {r['top1']:.2f} | {r['top5']:.2f} | "
           f"{_human_bytes(r['label_bytes'])} |" for r in rows]
    atomic_write_text(os.path.join(out, "results.md"), "\n".join(md) + "\n")
    print("\n".join(md))
    print(f"results: {os.path.join(out, 'results.md')} (.csv, .json)")


def _human_bytes(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def main(argv: list[str] | None = None) -> None:
    cfg = parse_config(PIPELINE_SCHEMA, argv, description=__doc__)
    run_pipeline(cfg)


if __name__ == "__main__":
    main()
