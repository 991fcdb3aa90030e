"""Within-class diversity of distilled images, measured in the teacher's feature space.

The paper's motivating finding (Xiao & He, NeurIPS 2024; Table 1, "dataset analysis" on
ImageNet-1K) is that images recovered with across-class batches (SRe2L) are more alike within a
class than images recovered with class-wise batches and class-wise BN supervision (LPLD). The
paper's exact definitions could not be read while this was written, so the ones below are ours,
stated in full. It measures, per class, the mean pairwise **cosine** similarity of the teacher's penultimate
features and the **MMD** between synthetic and real features (:mod:`lpld.analysis.metrics` states
the definitions in full), from the teacher's features of each image set (extracted here, or read
from a features file), and writes them per class and summarised over classes.

CLI::

    python -m lpld.analysis.diversity --config squeeze/configs/tiny.yaml --weights teacher.pth \\
        --syn lpld=IMAGES_A sre2l=IMAGES_B --real /data/tiny-imagenet-200 --real-per-class 100 \\
        --output-dir results/diversity

Each ``--syn``/``--real`` source may also be a features file written by ``--save-features``
(``*.pt``), so features can be extracted on a GPU once and analysed anywhere.
"""
from __future__ import annotations

import csv
import io
import math
import os
import re
import sys
import time
from typing import Iterable, Sequence

import torch
from torch import nn
from torch.utils.data import DataLoader

from ..config import Option, parse_config
from ..data import DATASET_NUM_CLASSES, ImageFolder, LabeledImages, build_dataset, select_classes
from ..data.transforms import val_transform
from ..models import build_model
from ..models.teacher import checkpoint_classes
from ..utils.errors import InputValueError, UnreadableFileError, UnsafeFileError
from ..utils.io import atomic_json_dump, atomic_torch_save, atomic_write_text, ensure_writable_dir
from ..utils.log import get_logger
from ..utils.progress import progress_bar
from ..utils.runtime import autocast, resolve_device, to_channels_last
from ..utils.safe_load import safe_torch_load
from .metrics import class_counts, class_cosine_similarity, diversity_metrics, summarize
from .metrics import class_linear_mmd2, class_mmd2_gaussian  # noqa: F401 - the measures, part of this interface

log = get_logger(__name__)

FEATURES_FORMAT = "lpld-features-v1"


# --------------------------------------------------------------------------------------------
# Features
# --------------------------------------------------------------------------------------------

def classifier_head(model: nn.Module) -> nn.Linear:
    """The final linear layer whose *input* is the penultimate feature: timm's
    ``get_classifier()``, torchvision ResNet's ``fc``, or the last Linear of ``classifier``."""
    head = None
    if hasattr(model, "get_classifier"):
        head = model.get_classifier()
    elif isinstance(getattr(model, "fc", None), nn.Module):
        head = model.fc
    elif isinstance(getattr(model, "classifier", None), nn.Module):
        linears = [m for m in model.classifier.modules() if isinstance(m, nn.Linear)]
        head = linears[-1] if linears else None
    if not isinstance(head, nn.Linear):
        raise InputValueError(f"cannot find the final Linear classifier of {type(model).__name__} "
                         f"(looked at get_classifier(), .fc, .classifier); found {type(head).__name__}")
    return head


@torch.no_grad()
def penultimate_features(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """Global-pooled features entering the classifier, ``[B, D]``, captured with a forward
    pre-hook on the head (the model is not modified)."""
    captured: list[torch.Tensor] = []
    handle = classifier_head(model).register_forward_pre_hook(
        lambda _module, inputs: captured.append(inputs[0].detach()))
    try:
        model(images)
    finally:
        handle.remove()
    return captured[-1].flatten(1)


@torch.no_grad()
def extract_features(model: nn.Module, loader, device: torch.device, *, amp: bool = False,
                     progress: bool = True, desc: str = "features") -> tuple[torch.Tensor, torch.Tensor]:
    """Penultimate features (float32, CPU, ``[N, D]``) and labels (int64 ``[N]``) of a loader."""

    model.eval()
    feats, labels = [], []
    for images, target in progress_bar(loader, desc=desc, leave=False, disable=not progress):
        images = to_channels_last(images.to(device, non_blocking=True), device.type == "cuda")
        with autocast(device, amp and device.type == "cuda"):
            f = penultimate_features(model, images)
        feats.append(f.float().cpu())
        labels.append(torch.as_tensor(target, dtype=torch.int64))
    if not feats:
        raise InputValueError(f"{desc}: the loader yielded no images")
    return torch.cat(feats), torch.cat(labels)


# --------------------------------------------------------------------------------------------
# Data sources: image folders, the real dataset, cached feature files
# --------------------------------------------------------------------------------------------

_NEW_FOLDER = re.compile(r"^new(\d+)$")


def synthetic_class_indices(folder_names: Sequence[str], class_names: Sequence[str] | None = None) -> list[int]:
    """Class index of each synthetic class folder: ``new{c:03d}`` (the authors' layout) -> c, even
    when only a range of classes was recovered; folder names that are class names (e.g. wnids) ->
    their index in ``class_names``; otherwise the sorted folder position."""
    matches = [_NEW_FOLDER.match(name) for name in folder_names]
    if folder_names and all(matches):
        return [int(m.group(1)) for m in matches]
    if class_names is not None and all(name in class_names for name in folder_names):
        index = {name: i for i, name in enumerate(class_names)}
        return [index[name] for name in folder_names]
    return list(range(len(folder_names)))


def limit_per_class(samples: Sequence[tuple[str, int]], per_class: int | None, seed: int = 0,
                    keep: Iterable[int] | None = None) -> list[tuple[str, int]]:
    """A seeded random choice of at most ``per_class`` samples of each class (all when None), of
    the classes in ``keep`` (all when None), returned in the original order."""
    keep = set(keep) if keep is not None else None
    perm = torch.randperm(len(samples), generator=torch.Generator().manual_seed(seed)).tolist()
    taken: dict[int, int] = {}
    chosen = []
    for i in perm:
        label = samples[i][1]
        if keep is not None and label not in keep:
            continue
        if per_class is None or taken.get(label, 0) < per_class:
            taken[label] = taken.get(label, 0) + 1
            chosen.append(i)
    return [samples[i] for i in sorted(chosen)]


def save_features(path: str, features: torch.Tensor, labels: torch.Tensor, **meta) -> None:
    """fp16 features + labels + provenance, written atomically (``*.pt``)."""
    atomic_torch_save({"format": FEATURES_FORMAT, "features": features.half(), "labels": labels.long(),
                       **meta}, path)


def load_features(path: str) -> tuple[torch.Tensor, torch.Tensor, dict]:
    try:
        obj = safe_torch_load(path, what="features file", fix="compute the features again with --save-features")
    except UnsafeFileError:
        raise
    except Exception as err:  # noqa: BLE001 - name the file whatever went wrong
        raise UnreadableFileError(f"cannot read features file {path}: {err}") from err
    if not isinstance(obj, dict) or obj.get("format") != FEATURES_FORMAT:
        raise InputValueError(f"{path} is not a features file written by --save-features "
                         f"(expected format {FEATURES_FORMAT!r})")
    meta = {k: v for k, v in obj.items() if k not in ("features", "labels")}
    return obj["features"].float(), obj["labels"].long(), meta


# --------------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------------

def _class_span(spec, values):
    """``classes``: ``A:B`` with A < B (checked against the class count once it is known)."""
    m = re.fullmatch(r"(\d+):(\d+)", spec.strip())
    if not m:
        return "must be A:B (class indices, half-open, e.g. 0:5)"
    return None if int(m.group(1)) < int(m.group(2)) else "must be A:B with A < B"


SCHEMA = {
    # Model/data keys shared with squeeze/configs/*.yaml, so --config squeeze/configs/tiny.yaml works.
    "dataset": Option("tiny", str, "normalisation and real-data layout: tiny | imagenet | imagefolder | in21k | demo",
                      choices=("tiny", "imagenet", "imagefolder", "in21k", "demo")),
    "model": Option("resnet18", str, "teacher architecture: torchvision name or timm/<name>"),
    "tiny_stem": Option(True, bool, "Tiny-ImageNet ResNet stem (3x3 conv1, no max-pool)",
                        "authors' recover/tiny_forward/forward_once.py"),
    "num_classes": Option(None, int, "classes of the teacher (default: from the real dataset, else by --dataset)",
                          min=1),
    "image_size": Option(64, int, "images are resized + centre-cropped to this size", min=1),
    "batch_size": Option(256, int, "images per forward pass", min=1),
    "workers": Option(4, int, "data-loading worker processes", min=0),
    "device": Option("auto", str, "auto | cpu | cuda | cuda:N"),
    "amp": Option(True, bool, "bf16 autocast on CUDA (ignored on CPU)"),
    "seed": Option(0, int, "seed of the per-class choice of real images", min=0),
    "progress": Option(True, bool, "progress bars (tqdm on a terminal, whole lines in a log)"),
    "weights": Option(None, str, "teacher checkpoint (class-BN buffers are ignored); needed unless every "
                                 "source is a features file"),
    "syn": Option([], list, "synthetic sets as NAME=PATH: an image folder (one sub-folder per class, e.g. "
                            "the authors' new000..new199) or a features file (*.pt) from --save-features"),
    "real": Option(None, str, "real data: a dataset root for --dataset (Tiny: the folder with wnids.txt) or "
                              "a features file (*.pt); omit to report cosine similarity only"),
    "real_split": Option("train", str, "split of the real dataset", choices=("train", "val")),
    "real_per_class": Option(100, int, "real images per class (seeded random choice; 0 = all)", min=0),
    "classes": Option(None, str, "restrict to class indices A:B (half-open), e.g. 0:5", check=_class_span),
    "estimator": Option("unbiased", str, "MMD^2 estimator", choices=("unbiased", "biased")),
    "sigma": Option(None, float, "fixed Gaussian bandwidth (default: median heuristic per class)",
                    min=0, min_open=True),
    "save_features": Option(False, bool, "also write each extracted set as OUTPUT_DIR/features_<name>.pt"),
    "output_dir": Option("outputs/diversity", str, "diversity_per_class.csv, diversity_summary.json, diversity.md"),
}

METRICS = ("cosine", "mmd2_rbf", "mmd2_linear")


def _parse_sources(items: Sequence[str]) -> list[tuple[str, str]]:
    out = []
    for item in items:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise InputValueError(f"--syn expects NAME=PATH (e.g. lpld=recover/out/ipc50); got {item!r}")
        if not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
            raise InputValueError(f"--syn name {name!r}: use letters, digits, '.', '_' or '-'")
        out.append((name, path))
    if len({n for n, _ in out}) != len(out):
        raise InputValueError(f"--syn names must be unique; got {[n for n, _ in out]}")
    return out


def _class_bounds(spec: str | None) -> tuple[int, float]:
    """``A:B`` as numbers (checked against the number of classes later); no spec: everything."""
    if not spec:
        return 0, math.inf
    m = re.fullmatch(r"(\d+):(\d+)", spec.strip())
    if not m:
        raise InputValueError(f"--classes expects A:B (class indices, half-open); got {spec!r}")
    return int(m.group(1)), int(m.group(2))


def _class_range(spec: str | None, num_classes: int) -> range:
    if not spec:
        return range(num_classes)
    m = re.fullmatch(r"(\d+):(\d+)", spec.strip())
    if not m or not (0 <= int(m.group(1)) < int(m.group(2)) <= num_classes):
        raise InputValueError(f"--classes expects A:B with 0 <= A < B <= {num_classes}; got {spec!r}")
    return range(int(m.group(1)), int(m.group(2)))


def _select(features: torch.Tensor, labels: torch.Tensor, keep: range):
    mask = (labels >= keep.start) & (labels < keep.stop)
    return features[mask], labels[mask]


class _Teacher:
    """Built lazily: a run over cached features never needs the checkpoint."""

    def __init__(self, cfg, num_classes: int):
        self.cfg, self.num_classes, self.model, self.device = cfg, num_classes, None, None

    def features(self, dataset, desc: str):

        cfg = self.cfg
        if self.model is None:
            if not cfg.weights:
                raise InputValueError("--weights (the teacher checkpoint) is needed to extract features from images")
            self.device = resolve_device(cfg.device)
            self.model = build_model(cfg.model, self.num_classes, tiny_stem=cfg.tiny_stem, weights=cfg.weights)
            self.model = to_channels_last(self.model.to(self.device).eval(), self.device.type == "cuda")
        loader = DataLoader(dataset, batch_size=cfg.batch_size, shuffle=False, num_workers=cfg.workers,
                            pin_memory=self.device.type == "cuda")
        return extract_features(self.model, loader, self.device, amp=cfg.amp, progress=cfg.progress, desc=desc)


def _load_real(cfg, keep_fn, teacher_fn, save_fn, cached_from):
    """(features, labels, class_names) of the real set, or None."""
    if not cfg.real:
        return None
    if cfg.real.endswith(".pt"):
        f, lab, meta = load_features(cfg.real)
        cached_from.add(str(meta.get("teacher")))
        return f, lab, meta.get("class_names")
    data = _teacher_classes_of(build_dataset(cfg.dataset, cfg.real, cfg.real_split), cfg)
    keep = keep_fn(len(data.classes))
    samples = limit_per_class(data.samples, cfg.real_per_class or None, cfg.seed, keep)
    subset = LabeledImages(samples, data.classes, val_transform(cfg.image_size, cfg.dataset))
    f, lab = teacher_fn(len(data.classes)).features(subset, f"real {cfg.real_split}")
    save_fn("real", f, lab, data.classes, cfg.real)
    return f, lab, list(data.classes)


def _teacher_classes_of(data: LabeledImages, cfg) -> LabeledImages:
    """The real classes the teacher knows: a teacher trained on a class subset (its checkpoint names
    the subset's classes) is compared with the real images of those classes only."""
    names = checkpoint_classes(cfg.weights) if cfg.weights else None
    if names and len(names) < len(data.classes) and set(names) <= set(data.classes):
        return select_classes(data, ",".join(names), f"--real {cfg.real}")
    return data


def _load_synthetic(name, path, cfg, class_names, teacher_fn, save_fn, cached_from):
    if path.endswith(".pt"):
        f, lab, meta = load_features(path)
        cached_from.add(str(meta.get("teacher")))
        return f, lab
    folder = ImageFolder(path, val_transform(cfg.image_size, cfg.dataset))
    mapping = synthetic_class_indices(folder.classes, class_names)
    lo, hi = _class_bounds(cfg.classes)
    folder.samples = [(p, mapping[t]) for p, t in folder.samples if lo <= mapping[t] < hi]
    folder.targets = [t for _, t in folder.samples]
    if not folder.samples:
        raise InputValueError(f"--syn {name}={path}: no images of classes {cfg.classes}")
    f, lab = teacher_fn(None).features(folder, f"syn {name}")
    save_fn(name, f, lab, class_names, path)
    return f, lab


def run_diversity(cfg) -> dict:
    """Extract (or load) features, compute the per-class metrics, write CSV + JSON + Markdown."""
    t0 = time.time()
    sources = _parse_sources(cfg.syn)
    if not sources and not cfg.real:
        raise InputValueError("give at least one synthetic set (--syn NAME=PATH [NAME=PATH ...]) or --real "
                         "(real features only, e.g. to cache them with --save-features)")
    ensure_writable_dir(cfg.output_dir, "diversity output directory", owner="diversity")
    num_classes = cfg.num_classes
    teacher: dict[str, _Teacher] = {}

    def teacher_fn(dataset_classes):
        if "t" not in teacher:
            k = num_classes or dataset_classes or DATASET_NUM_CLASSES.get(cfg.dataset)
            if not k:
                raise InputValueError("--num-classes is needed (no real dataset to read it from)")
            teacher["t"] = _Teacher(cfg, k)
        return teacher["t"]

    def save_fn(name, f, lab, class_names, source):
        if cfg.save_features:
            save_features(os.path.join(cfg.output_dir, f"features_{name}.pt"), f, lab,
                          class_names=list(class_names) if class_names else None, source=source,
                          teacher=cfg.weights, model=cfg.model, image_size=cfg.image_size)

    def keep_fn(k):
        return _class_range(cfg.classes, num_classes or k)

    cached_from: set[str] = set()  # teachers named in cached feature files
    real = _load_real(cfg, keep_fn, teacher_fn, save_fn, cached_from)
    class_names = real[2] if real else None
    t_real = time.time() - t0
    syn = {}
    for name, path in sources:
        syn[name] = _load_synthetic(name, path, cfg, class_names, teacher_fn, save_fn, cached_from)
    t_features = time.time() - t0
    named = (cached_from | ({cfg.weights} if cfg.weights and teacher else set())) - {"None"}
    if len({os.path.basename(t) for t in named}) > 1:
        raise InputValueError(f"the feature sets come from different teachers ({sorted(named)}): their features "
                         f"are not comparable; extract all sets with one teacher")

    largest = max([int(lab.max()) + 1 for _, lab in syn.values() if lab.numel()] +
                  ([int(real[1].max()) + 1] if real and real[1].numel() else []) + [1])
    k = num_classes or (len(class_names) if class_names else None) or \
        (teacher["t"].num_classes if teacher else None) or DATASET_NUM_CLASSES.get(cfg.dataset) or largest
    if largest > k:
        raise InputValueError(f"a feature set holds class index {largest - 1}, but there are {k} classes; "
                         f"set --num-classes")
    keep = _class_range(cfg.classes, k)
    real_fl = _select(real[0], real[1], keep) if real else None

    per_method = {}
    for name, (f, lab) in syn.items():
        f, lab = _select(f, lab, keep)
        per_method[name] = diversity_metrics((f, lab), real_fl, k, estimator=cfg.estimator, sigma=cfg.sigma)
    if real_fl is not None:
        per_method["real"] = {"n_syn": class_counts(real_fl[1], k).double(),
                              "cosine": class_cosine_similarity(real_fl[0], real_fl[1], k)}
    t_total = time.time() - t0

    summary = {
        "methods": {name: {"images": int(m["n_syn"].sum()),
                           **{key: summarize(m[key][list(keep)]) for key in METRICS if key in m}}
                    for name, m in per_method.items()},
        "settings": {"teacher": cfg.weights or ", ".join(sorted(cached_from)) or None, "model": cfg.model,
                     "tiny_stem": cfg.tiny_stem,
                     "dataset": cfg.dataset, "image_size": cfg.image_size, "num_classes": k,
                     "classes": f"{keep.start}:{keep.stop}", "syn": dict(sources), "real": cfg.real,
                     "real_split": cfg.real_split, "real_per_class": cfg.real_per_class,
                     "mmd_estimator": cfg.estimator,
                     "rbf_bandwidth": "median heuristic per class" if cfg.sigma is None else cfg.sigma,
                     "features": "teacher penultimate (global-pooled input of the classifier)"},
        "wall_time_s": {"real_features": round(t_real, 2), "all_features": round(t_features, 2),
                        "total": round(t_total, 2)},
    }
    rows = _per_class_rows(per_method, keep, class_names)
    atomic_write_text(os.path.join(cfg.output_dir, "diversity_per_class.csv"), _csv_text(rows))
    atomic_json_dump(summary, os.path.join(cfg.output_dir, "diversity_summary.json"))
    atomic_write_text(os.path.join(cfg.output_dir, "diversity.md"), markdown_summary(summary))
    return summary


def _per_class_rows(per_method, keep: range, class_names) -> list[dict]:
    rows = []
    for name, m in per_method.items():
        for c in keep:
            row = {"method": name, "class": c, "class_name": class_names[c] if class_names else "",
                   "n_syn": int(m["n_syn"][c]), "n_real": int(m["n_real"][c]) if "n_real" in m else ""}
            for key in METRICS + ("rbf_sigma",):
                row[key] = "" if key not in m or math.isnan(float(m[key][c])) else f"{float(m[key][c]):.6g}"
            rows.append(row)
    return rows


def _csv_text(rows: list[dict]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]) if rows else ["method"])
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def markdown_summary(summary: dict) -> str:
    """A Markdown table: one row per image set, mean ± std over classes of each metric."""
    s = summary["settings"]

    def cell(stats):
        if not stats or stats["classes"] == 0:
            return "–"
        return f"{stats['mean']:.4f} ± {stats['std']:.4f}"
    lines = ["| image set | images | classes | cosine (within class) ↓ | MMD² RBF (syn vs real) ↓ | "
             "MMD² linear ↓ |", "|---|---:|---:|---:|---:|---:|"]
    for name, m in summary["methods"].items():
        lines.append(f"| {name} | {m['images']} | {m.get('cosine', {}).get('classes', 0)} | {cell(m.get('cosine'))} | "
                     f"{cell(m.get('mmd2_rbf'))} | {cell(m.get('mmd2_linear'))} |")
    real = (f"`{s['real']}`" + ("" if str(s["real"]).endswith(".pt") else
                                f" ({s['real_split']}, {s['real_per_class']} per class)")) if s["real"] else "none"
    lines += ["", f"Teacher `{s['teacher']}` ({s['model']}, tiny stem {s['tiny_stem']}), its class indices {s['classes']}, "
                  f"real: {real}. Mean ± std (ddof=0) "
                  f"over classes. Cosine: mean over distinct pairs of penultimate features. MMD²: "
                  f"{s['mmd_estimator']} estimator, Gaussian kernel, bandwidth: {s['rbf_bandwidth']}; "
                  f"linear = squared distance of class means.", ""]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    cfg = parse_config(SCHEMA, argv, description=__doc__.split("\n\n")[0])
    try:
        summary = run_diversity(cfg)
    except (ValueError, FileNotFoundError, RuntimeError) as err:
        log.error(f"error: {err}")
        return 2
    print(markdown_summary(summary))  # the command's output: the table
    log.info(f"wrote {os.path.join(cfg.output_dir, 'diversity_summary.json')} (+ .csv, .md)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
