"""Options of the squeeze stage (teacher training and the class-statistics pass).

Defaults reproduce the authors' Tiny-ImageNet teacher (``resnet18_tiny_ep50.pth`` loaded by their
``recover/tiny_forward/forward_once.py``), trained with SRe2L's Tiny-ImageNet squeeze command:
``main.py --batch-size 256 --epochs 50 --opt sgd --lr 0.2 --momentum 0.9 --weight-decay 1e-4
--lr-scheduler cosineannealinglr --lr-warmup-epochs 5 --lr-warmup-method linear
--lr-warmup-decay 0.01``.
"""
from __future__ import annotations

from ..config import Option
from ..data.subset import CLASSES_OPTION

SRE2L_TINY = "SRe2L Tiny-ImageNet squeeze command (main.py)"
AUTHORS_FORWARD = "authors' recover/tiny_forward/forward_once.py"

COMMON = {
    "dataset": Option("tiny", str, "tiny | imagenet | imagefolder | demo", AUTHORS_FORWARD,
                      choices=("tiny", "imagenet", "imagefolder", "in21k", "demo")),
    "data_path": Option(None, str, "dataset root (Tiny: the folder with wnids.txt; ImageNet: with train/ and val/)"),
    "model": Option("resnet18", str, "torchvision model name or timm/<name>", AUTHORS_FORWARD),
    "tiny_stem": Option(True, bool, "3x3 stride-1 conv1 and no max-pool (Tiny-ImageNet ResNet)", AUTHORS_FORWARD),
    "classes": CLASSES_OPTION,
    "num_classes": Option(None, int, "classes (default: from the dataset or its subset)", min=1),
    "image_size": Option(64, int, "training crop size", AUTHORS_FORWARD + " RandomResizedCrop(64)", min=1),
    "batch_size": Option(256, int, "images per step", SRE2L_TINY + " --batch-size 256", min=1),
    "workers": Option(8, int, "data-loading worker processes", min=0),
    "device": Option("auto", str, "auto | cpu | cuda | cuda:N"),
    "amp": Option(None, bool, "bf16 autocast for the forward (default: on for CUDA, off on CPU; --amp "
                              "on CPU uses CPU autocast); the loss and the top-k stay fp32"),
    "channels_last": Option(None, bool, "channels_last memory format (default: on for CUDA)"),
    "seed": Option(0, int, "random seed (model init, epoch order, per-image augmentation)", min=0),
    "progress": Option(True, bool, "progress bars (tqdm on a terminal, whole lines in a log)"),
}

TRAIN_SCHEMA = {
    **COMMON,
    "epochs": Option(50, int, "training epochs", SRE2L_TINY + " --epochs 50", min=1),
    "lr": Option(0.2, float, "base learning rate", SRE2L_TINY + " --lr 0.2", min=0, min_open=True),
    "momentum": Option(0.9, float, "SGD momentum", SRE2L_TINY + " --momentum 0.9", min=0, max=1, max_open=True),
    "weight_decay": Option(1e-4, float, "weight decay", SRE2L_TINY + " --weight-decay 1e-4", min=0),
    "warmup_epochs": Option(5, int, "linear warm-up epochs", SRE2L_TINY + " --lr-warmup-epochs 5", min=0),
    "warmup_start_factor": Option(0.01, float, "warm-up starts at this fraction of lr",
                                  SRE2L_TINY + " --lr-warmup-decay 0.01", min=0, max=1, min_open=True),
    "label_smoothing": Option(0.0, float, "cross-entropy label smoothing", "torchvision reference default",
                              min=0, max=1),
    "val_interval": Option(1, int, "evaluate every N epochs (and after the last)", min=1),
    "output_dir": Option("outputs/squeeze", str, "checkpoints and metrics go here"),
    "resume": Option(False, bool, "continue from output_dir/checkpoint.pth"),
    "log_interval": Option(20, int, "refresh the progress-bar loss every N steps (one host synchronisation each)",
                           min=1),
}

CLASS_STATS_SCHEMA = {
    **COMMON,
    "weights": Option(None, str, "trained teacher checkpoint (ours, torchvision's ResNet-18 weights "
                                 "for ImageNet-1K, or any {'model': state_dict} file)"),
    "output": Option(None, str, "class-BN checkpoint to write (default: next to --weights, "
                                "<name>_class_bn.pth)"),
    "stats_mode": Option("ema", str, "ema: the authors' per-batch running average (momentum 0.1); "
                                     "exact: count-weighted statistics over the whole pass "
                                     "(order independent; a deviation from the paper)",
                         AUTHORS_FORWARD, choices=("ema", "exact")),
    "check_unchanged": Option(True, bool, "also evaluate before the pass and fail if accuracy changed"),
    "amp": Option(False, bool, "bf16 autocast for the pass (opt-in; default fp32 as the authors' "
                               "forward_once.py; bf16 moves the class statistics by up to ~2e-3 "
                               "relative per layer, docs/benchmarks.md)", AUTHORS_FORWARD),
}
