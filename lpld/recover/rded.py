"""RDED as an image source: realistic patches of real training images, chosen by the teacher, stitched.

RDED (Sun et al., "On the Diversity and Realism of Distilled Dataset: An Efficient Dataset
Distillation Paradigm", CVPR 2024; github LINs-lab/RDED, ``synthesize/main.py`` and
``synthesize/utils.py``). For each class ``c``:

1. ``mipc`` real training images of ``c`` drawn at random (``ImageFolder(shuffle=True, ipc=mipc)``).
2. From each, ``num_crop`` square patches: ``RandomResizedCrop(size // factor, ratio=(1, 1),
   antialias=True)`` (default scale (0.08, 1)) on the image tensor, then normalised
   (``MultiRandomCrop``).
3. Realism score of a patch: the teacher's cross-entropy for class ``c`` on the patch zero-padded,
   in normalised space (i.e. with the mean colour), to ``size x size`` (``pad``, ``selector``).
   Lower is more realistic.
4. Per image the crop with the lowest score; over the class's images, the ``ipc * factor**2``
   lowest (``argmin`` over crops, ``argsort`` ascending over images).
5. Stitch ``factor x factor`` patches per image (``mix_images``): image ``q`` (0..ipc-1) takes, in
   row-major tile order ``k``, selected patch ``k * ipc + q``, nearest-resized to its tile; tiles in
   the first ``size % factor`` rows/columns are one pixel larger.
6. Denormalise, ``(x * 255).astype(uint8)``, save as JPEG with PIL's default quality (75).

Defaults per dataset (their ``scripts/`` and ``argument.py``): Tiny-ImageNet ``factor 1, num_crop 5,
mipc 300, ipc 10/50``, teacher ``resnet18_modified`` (our Tiny stem), 64 px; ImageNet-1K
``factor 2, num_crop 5, mipc 300, ipc 10``, teacher torchvision ``resnet18``, 224 px.

Ours, and why:

* Deterministic per (seed, class): the ``mipc`` images are
  :func:`lpld.recover.random_real.draw_images` (a permutation seeded by (seed, class)), and image
  ``j``'s crops come from a generator seeded by (seed, class, j). An image set depends on its
  settings, seed and class only, not on the class range of a run (shards), loader workers or
  resumption. (Theirs: Python's unseeded ``random.shuffle`` of ``os.listdir`` and global torch RNG
  in loader workers.)
* Ties: the per-image ``argmin`` keeps the first crop and the ranking over images is a stable sort
  (lower image position first); their CUDA ``argsort`` leaves ties in unspecified order.
* Cross-entropy via ``F.cross_entropy`` (log-softmax) instead of ``-log(softmax(...))``: the same
  value up to float rounding, without ``log(0)`` for a confident teacher.
* Normalisation: by default the dataset's (``lpld.data.normalization``), the one our teachers were
  trained with; RDED normalises every dataset with the ImageNet mean/std (``normalization:
  imagenet``, e.g. with their Tiny-ImageNet teacher). It is what the teacher sees, including the
  padding colour (zero = the mean); the written pixels are denormalised with the same constants.
* Written class by class, atomically, in the recovered-image layout
  (:mod:`lpld.recover.io`), so a killed run resumes with the next unfinished class.

Their relabel/validation (``validation/main.py``) differs from ours and is not part of this stage:
they compute soft labels online every step (teacher on the CutMix-ed batch, temperature 20 with
CutMix / 4 with MixUp) after ``ShufflePatches(factor)`` and ``RandomResizedCrop(size, scale=(1 /
factor, 1))`` + flip; our relabel stage stores FKD soft labels with the LPLD recipe (crop scale
(0.08, 1), flip, CutMix), which is what label pruning prunes.
"""
from __future__ import annotations

import argparse
import os
import time
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torchvision.transforms import InterpolationMode
from torchvision.transforms import functional as TF

from ..augment import sample_crop
from ..config import Option, at_most, parse_config
from ..data import DATASET_ALIASES, build_dataset, load_rgb, normalization
from ..data.subset import CLASSES_OPTION
from ..models import build_model, checkpoint_sha256, read_state_dict
from ..models.teacher import infer_num_classes
from ..utils.errors import InputValueError
from ..utils.io import ensure_writable_dir
from ..utils.log import get_logger
from ..utils.metrics import MetricsLog
from ..utils.progress import progress_bar
from ..utils.runtime import resolve_device
from .io import class_complete, remove_stale_temporaries, save_class
from .random_real import class_range, draw_images, images_by_class, write_or_check_manifest
from .synthesize import denormalize_to_uint8

log = get_logger(__name__)

RDED = "RDED argument.py"
SYN = "RDED synthesize/utils.py"
SCRIPTS = "RDED scripts/imagenet-1k_10ipc_resnet-18_to_resnet-18_cr5.sh"

RDED_SCHEMA = {
    # ---- teacher ----
    "teacher": Option(None, str, "teacher checkpoint (plain or class-BN; class-BN buffers are ignored)",
                      RDED + " --arch-name (torchvision pretrained weights for ImageNet-1K)"),
    "model": Option("resnet18", str, "torchvision model name or timm/<name>", SCRIPTS + " --arch-name resnet18"),
    "tiny_stem": Option(False, bool, "3x3 stride-1 conv1 and no max-pool (RDED's resnet18_modified)",
                        SYN + " load_model('resnet18_modified')"),
    "num_classes": Option(None, int, "classes of the teacher (default: read from the checkpoint)", min=1),
    # ---- real data ----
    "dataset": Option("imagenet", str, "real training set: tiny | imagenet | imagefolder | in21k | demo",
                      choices=("tiny", "imagenet", "imagefolder", "in21k", "demo", *DATASET_ALIASES)),
    "normalization": Option("dataset", str, "mean/std the teacher was trained with: dataset (lpld.data."
                            "normalization of --dataset) or imagenet (RDED's for every dataset, e.g. with "
                            "their Tiny-ImageNet teacher)", SYN + " normalize", choices=("dataset", "imagenet")),
    "data_path": Option(None, str, "dataset root (Tiny: the folder with wnids.txt; ImageNet: with train/; "
                        "demo: generated there if absent)", RDED + " --train-dir"),
    "classes": CLASSES_OPTION,
    # ---- what to make ----
    "ipc": Option(10, int, "images per class", SCRIPTS + " --ipc 10", min=1),
    "image_size": Option(224, int, "side of the stitched images", RDED + " input_size (224 ImageNet, 64 Tiny)", min=1),
    "factor": Option(2, int, "patches per side of a stitched image", SCRIPTS + " --factor 2",
                     min=1, check=at_most("image_size")),
    "num_crop": Option(5, int, "candidate crops per real image", SCRIPTS + " --num-crop 5", min=1),
    "mipc": Option(300, int, "real images drawn per class (one best crop each)", SCRIPTS + " --mipc 300",
                   min=1),
    "crop_scale_min": Option(0.08, float, "RandomResizedCrop area range of a candidate crop",
                             SYN + " MultiRandomCrop: RandomResizedCrop default scale (0.08, 1)",
                             min=0, max=1, min_open=True, check=at_most("crop_scale_max")),
    "crop_scale_max": Option(1.0, float, "see crop_scale_min", SYN + " MultiRandomCrop", min=0, max=1, min_open=True),
    "class_start": Option(0, int, "first class to make", min=0, check=at_most("class_end", strict=True)),
    "class_end": Option(None, int, "one past the last class (default: all)", min=1),
    "seed": Option(0, int, "seed; class c's images depend only on (settings, seed, c)", min=0),
    # ---- speed ----
    "batch_size": Option(256, int, "padded patches per teacher forward (speed only)",
                         SYN + " batched_forward(batch_size=mipc)", min=1),
    "workers": Option(0, int, "image-decoding worker processes", min=0),
    "device": Option("auto", str, "auto | cpu | cuda | cuda:N"),
    # ---- output ----
    "output_dir": Option("recover/syn_data_rded", str, "root of the image sets"),
    "exp_name": Option("rded_in1k_rn18_f2_ipc10", str, "sub-folder of output_dir holding new000/..."),
    "jpeg_quality": Option(75, int, "JPEG quality", "RDED synthesize/main.py save_images: PIL default", min=0, max=100),
    "progress": Option(True, bool, "progress bars (tqdm on a terminal, whole lines in a log)"),
}

DEFINING_KEYS = ("dataset", "normalization", "model", "tiny_stem", "num_classes", "ipc", "image_size", "factor",
                 "num_crop", "mipc", "crop_scale_min", "crop_scale_max", "seed", "jpeg_quality")


# --- the procedure, one function per step ------------------------------------------------------------
def crop_generator(seed: int, class_id: int, position: int) -> torch.Generator:
    """The generator of the ``position``-th drawn image of a class: its crops depend on nothing else."""
    state = np.random.SeedSequence([int(seed), int(class_id), int(position)]).generate_state(1, np.uint64)[0]
    return torch.Generator().manual_seed(int(state) & ((1 << 63) - 1))


def candidate_patches(image: torch.Tensor, num_crop: int, patch: int, scale: Sequence[float],
                      generator: torch.Generator) -> torch.Tensor:
    """``num_crop`` square crops of ``image`` ([3, H, W] in [0, 1]) resized to ``patch`` x ``patch``:
    ``RandomResizedCrop(patch, scale, ratio=(1, 1), antialias=True)`` on the tensor, as RDED's
    ``MultiRandomCrop``. Returns [num_crop, 3, patch, patch]."""
    height, width = image.shape[-2:]
    out = []
    for _ in range(num_crop):
        top, left, h, w = sample_crop(height, width, scale, (1.0, 1.0), generator)
        out.append(TF.resized_crop(image, top, left, h, w, [patch, patch], InterpolationMode.BILINEAR,
                                   antialias=True))
    return torch.stack(out)


def pad_to(patches: torch.Tensor, size: int) -> torch.Tensor:
    """Zero-pad [N, 3, p, p] to [N, 3, size, size], centred (extra pixel bottom/right), as RDED's ``pad``."""
    dh, dw = size - patches.shape[-2], size - patches.shape[-1]
    return F.pad(patches, (dw // 2, dw - dw // 2, dh // 2, dh - dh // 2))


@torch.no_grad()
def realism_scores(teacher: torch.nn.Module, patches: torch.Tensor, label: int, size: int,
                   batch_size: int, device: torch.device) -> torch.Tensor:
    """Teacher cross-entropy of class ``label`` on every normalised patch ([..., 3, p, p]), zero-padded
    to ``size``: RDED's realism score (lower = more realistic). Returns float32 of shape
    ``patches.shape[:-3]``."""
    flat = patches.reshape(-1, *patches.shape[-3:])
    scores = []
    for start in range(0, flat.shape[0], batch_size):
        chunk = pad_to(flat[start:start + batch_size], size).to(device)
        logits = teacher(chunk).float()
        target = torch.full((chunk.shape[0],), label, dtype=torch.int64, device=device)
        scores.append(F.cross_entropy(logits, target, reduction="none").cpu())
    return torch.cat(scores).reshape(patches.shape[:-3])


def select_patches(patches: torch.Tensor, scores: torch.Tensor, count: int) -> tuple[torch.Tensor, torch.Tensor]:
    """RDED's ``selector``: per image ([M, num_crop, 3, p, p], scores [M, num_crop]) the lowest-scoring
    crop, then the ``count`` images whose best crop scores lowest, best first. Returns
    (patches [count, 3, p, p], their scores [count])."""
    if count > patches.shape[0]:
        raise InputValueError(f"need {count} patches (ipc x factor^2) but only {patches.shape[0]} images were "
                              f"drawn; raise --mipc to at least {count}")
    best_crop = scores.argmin(dim=1)  # first minimum, as torch.argmin
    rows = torch.arange(patches.shape[0])
    best_scores = scores[rows, best_crop]
    order = torch.argsort(best_scores, stable=True)[:count]
    return patches[rows, best_crop][order], best_scores[order]


def stitch(patches: torch.Tensor, size: int, factor: int, ipc: int) -> torch.Tensor:
    """RDED's ``mix_images``: [ipc * factor**2, 3, p, p] -> [ipc, 3, size, size]; tile k (row-major) of
    image q is patch ``k * ipc + q`` resized (nearest) to the tile."""
    base, extra = divmod(size, factor)
    sides = [base + 1 if i < extra else base for i in range(factor)]
    out = torch.zeros(ipc, patches.shape[1], size, size, dtype=patches.dtype)
    k, top = 0, 0
    for i in range(factor):
        left = 0
        for j in range(factor):
            tile = patches[k * ipc:(k + 1) * ipc]
            out[:, :, top:top + sides[i], left:left + sides[j]] = F.interpolate(tile, size=(sides[i], sides[j]))
            left += sides[j]
            k += 1
        top += sides[i]
    return out


# --- data ---------------------------------------------------------------------------------------------
class ClassCandidates(torch.utils.data.Dataset):
    """Item j: the normalised candidate patches [num_crop, 3, p, p] of the j-th drawn image of a class."""

    def __init__(self, paths: Sequence[str], class_id: int, cfg: argparse.Namespace, mean, std) -> None:
        self.paths, self.class_id, self.cfg = list(paths), class_id, cfg
        self.mean, self.std = list(mean), list(std)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, j: int) -> torch.Tensor:
        cfg = self.cfg
        image = TF.to_tensor(load_rgb(self.paths[j]))
        patches = candidate_patches(image, cfg.num_crop, cfg.image_size // cfg.factor,
                                    (cfg.crop_scale_min, cfg.crop_scale_max),
                                    crop_generator(cfg.seed, self.class_id, j))
        return TF.normalize(patches, self.mean, self.std)


def class_candidates(paths: Sequence[str], class_id: int, cfg: argparse.Namespace, mean, std) -> torch.Tensor:
    """[mipc, num_crop, 3, p, p]; the same tensor for any number of workers."""
    data = ClassCandidates(paths, class_id, cfg, mean, std)
    if cfg.workers <= 0:
        return torch.stack([data[j] for j in range(len(data))])
    loader = torch.utils.data.DataLoader(data, batch_size=32, shuffle=False, num_workers=cfg.workers)
    return torch.cat(list(loader))


def make_class(teacher: torch.nn.Module, paths: Sequence[str], class_id: int, cfg: argparse.Namespace,
               mean, std, device: torch.device) -> tuple[torch.Tensor, dict]:
    """One class's RDED images ([ipc, H, W, 3] uint8) and a log record."""
    drawn = draw_images(paths, cfg.mipc, cfg.seed, class_id, what="mipc")
    candidates = class_candidates(drawn, class_id, cfg, mean, std)
    scores = realism_scores(teacher, candidates, class_id, cfg.image_size, cfg.batch_size, device)
    chosen, chosen_scores = select_patches(candidates, scores, cfg.ipc * cfg.factor ** 2)
    images = stitch(chosen, cfg.image_size, cfg.factor, cfg.ipc)
    record = {"class": class_id, "candidates": int(scores.numel()),
              "score_mean": round(float(chosen_scores.mean()), 6), "score_max": round(float(chosen_scores.max()), 6),
              "teacher_prob_min": round(float(torch.exp(-chosen_scores.max())), 6)}
    return denormalize_to_uint8(images, mean, std), record


# --- the stage ----------------------------------------------------------------------------------------
def load_plain_teacher(cfg: argparse.Namespace) -> tuple[torch.nn.Module, int]:
    if not cfg.teacher:
        raise InputValueError("--teacher is required: a trained classifier checkpoint of the dataset "
                              "(RDED: torchvision resnet18 weights for ImageNet-1K, resnet18_modified for Tiny)")
    num_classes = cfg.num_classes or infer_num_classes(read_state_dict(cfg.teacher), cfg.teacher)
    model = build_model(cfg.model, num_classes, tiny_stem=cfg.tiny_stem, weights=cfg.teacher)
    return model.eval().requires_grad_(False), num_classes


def check_config(cfg: argparse.Namespace) -> None:
    for name in ("ipc", "image_size", "factor", "num_crop", "mipc", "batch_size"):
        if getattr(cfg, name) < 1:
            raise InputValueError(f"--{name.replace('_', '-')} must be >= 1; got {getattr(cfg, name)}")
    if cfg.image_size // cfg.factor < 1:
        raise InputValueError(f"--factor {cfg.factor} leaves no pixel per patch at --image-size {cfg.image_size}")
    if not 0 < cfg.crop_scale_min <= cfg.crop_scale_max <= 1:
        raise InputValueError("need 0 < crop_scale_min <= crop_scale_max <= 1")
    if cfg.mipc < cfg.ipc * cfg.factor ** 2:
        raise InputValueError(f"--mipc {cfg.mipc} < ipc x factor^2 = {cfg.ipc * cfg.factor ** 2}: every stitched "
                              f"patch comes from a different real image; raise --mipc")


def check_pools(per_class: Sequence[Sequence[str]], classes: Sequence[int], cfg: argparse.Namespace) -> None:
    """Every class to make has at least ``mipc`` real images, checked before any class is made (a
    class short of images would otherwise stop the run half-way)."""
    need = cfg.ipc * cfg.factor ** 2
    for c in classes:
        have = len(per_class[c])
        if have < cfg.mipc:
            fix = (f"lower --mipc to at most {have}" if have >= need else
                   f"every stitched patch needs its own image (ipc x factor^2 = {need}): lower --ipc or --factor")
            raise InputValueError(f"class {c} of {cfg.data_path} has {have} training images, fewer than --mipc "
                                  f"{cfg.mipc}; {fix}")


def run_rded(cfg: argparse.Namespace) -> str:
    """Make classes [class_start, class_end) of an RDED image set; returns its folder."""
    check_config(cfg)
    if not cfg.data_path:
        raise InputValueError("--data-path is required: the real dataset's root (its train split is sampled)")
    dataset = DATASET_ALIASES.get(cfg.dataset, cfg.dataset)
    real = build_dataset(dataset, cfg.data_path, "train", classes=cfg.classes)
    teacher, num_classes = load_plain_teacher(cfg)
    if num_classes != len(real.classes):
        raise InputValueError(f"teacher {cfg.teacher} has {num_classes} classes but {cfg.data_path} has "
                              f"{len(real.classes)}; use the teacher of this dataset")
    classes = class_range(cfg, num_classes)
    root = os.path.join(cfg.output_dir, cfg.exp_name)
    ensure_writable_dir(root, "RDED output directory", owner="images")
    mean, std = normalization("imagenet" if cfg.normalization == "imagenet" else dataset)
    defining = {k: getattr(cfg, k) for k in DEFINING_KEYS}
    defining.update(method="rded", dataset=dataset, num_classes=num_classes, class_subset=cfg.classes, data_path=os.path.abspath(cfg.data_path),
                    teacher_sha256=checkpoint_sha256(cfg.teacher))  # the weights' content, as recover
    write_or_check_manifest(os.path.join(root, "rded.json"), defining, {
        "teacher": os.path.abspath(cfg.teacher), "mean_std": [list(mean), list(std)],
        "classes": list(real.classes), "layout": "new{c:03d}/class{c:03d}_id{i:03d}.jpg"})
    remove_stale_temporaries(root, classes)
    device = resolve_device(cfg.device)
    teacher.to(device)
    per_class = images_by_class(real.samples, num_classes)
    todo = [c for c in classes if not class_complete(root, c, cfg.ipc)]
    check_pools(per_class, todo, cfg)
    metrics_log = MetricsLog(os.path.join(root, f"rded_log_{classes.start:05d}-{classes.stop:05d}"))
    log.info(f"rded: {dataset} classes [{classes.start}, {classes.stop}) of {num_classes}, ipc {cfg.ipc}, factor "
             f"{cfg.factor}, {cfg.mipc} images x {cfg.num_crop} crops per class, {len(classes) - len(todo)} already "
             f"complete -> {root}")
    for c in progress_bar(todo, desc="rded", disable=not cfg.progress):
        t0 = time.perf_counter()
        pixels, record = make_class(teacher, per_class[c], c, cfg, mean, std, device)
        save_class(root, c, pixels, cfg.jpeg_quality)
        metrics_log.append({**record, "seconds": round(time.perf_counter() - t0, 3)})
    return root


def main(argv: Sequence[str] | None = None) -> str:
    cfg = parse_config(RDED_SCHEMA, argv, sections=("common", "recover"),
                       description="RDED images: teacher-scored patches of real training images, stitched "
                                   "factor x factor, in the recovered-image layout.")
    root = run_rded(cfg)
    print(root)  # the command's output: the image folder
    return root
