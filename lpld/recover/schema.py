"""Options of the recover stage (image synthesis by BN matching).

Defaults are the authors' ImageNet-1K LPLD recovery, ``recover/scripts/imagenet1k_recover.sh`` of
he-y/soft-label-pruning-quantization-for-dataset-distillation (the released LPLD repository's README
runs ``scripts/imagenet1k_recover.sh`` but omits the file; this is the same authors' follow-up repository
with the same ``data_synthesis_class.py``)::

    data_synthesis_class.py --arch-name resnet18 --ipc $ipc --batch-size $ipc --lr 0.25
        --iteration 4000 --l2-scale 0 --tv-l2 0 --r-bn 0.01 --store-best-images
        --syn-data-path syn_data_LPLD --exp-name LPLD_in1k_rn18_4k_ipc${ipc}

``--jitter 32`` and ``--first-bn-multiplier 10`` are that script's argparse defaults. The presets in
``recover/configs/`` set the Tiny-ImageNet and ImageNet-21K-P values.
"""
from __future__ import annotations

from ..config import Option, at_least, at_most

IN1K = "authors' recover/scripts/imagenet1k_recover.sh"
SYN = "authors' recover/data_synthesis_class.py"
SRE2L = "SRe2L recover/data_synthesis.py"

RECOVER_SCHEMA = {
    # ---- teacher ----
    "teacher": Option(None, str, "class-BN teacher checkpoint ({'model': state_dict} with class_running_mean/var "
                                 "in every BN; ours from squeeze/class_stats.py or the authors' resnet18_0.pth / "
                                 "resnet18_tiny_0.pth / resnet18_21k_0.pth)", IN1K + " --arch-checkpoint"),
    "model": Option("resnet18", str, "torchvision model name or timm/<name>", IN1K + " --arch-name resnet18"),
    "tiny_stem": Option(False, bool, "3x3 stride-1 conv1 and no max-pool (the Tiny-ImageNet ResNet)"),
    "num_classes": Option(None, int, "classes of the teacher (default: read from the checkpoint)", min=1),
    "dataset": Option("imagenet", str, "selects the normalisation: imagenet | tiny | in21k (none) | demo",
                      SYN + " clip()/denormalize() ImageNet mean/std",
                      choices=("imagenet", "imagefolder", "tiny", "in21k", "demo")),
    # ---- what to synthesise ----
    "mode": Option("class", str, "class: LPLD, one class per batch matched to its class-wise BN statistics; "
                                 "sre2l: SRe2L baseline, one image of each of batch_size classes per batch, "
                                 "matched to the global BN statistics",
                   SYN + " --bn-hook-type class_stats_training / " + SRE2L, choices=("class", "sre2l")),
    "bn_target": Option("auto", str, "BN statistics to match: auto (class for mode class, global for sre2l); "
                                     "class: each class's class_running_mean/var (class-wise supervision); "
                                     "global: running_mean/var. mode class + global = class-wise batching "
                                     "without class-wise supervision (paper's Table 4 ablation)",
                        choices=("auto", "class", "global")),
    "ipc": Option(50, int, "images per class", IN1K + " recover 50 0 1000", min=1),
    "batch_size": Option(None, int, "the authors' --batch-size. class mode: images of one class optimised "
                                    "together (default ipc; must divide ipc); sre2l mode: classes per batch "
                                    "(default 100)", IN1K + " --batch-size $ipc; SRe2L recover.sh --batch-size 100",
                         min=1),
    "class_start": Option(0, int, "first class to synthesise", SYN + " --class-start",
                          min=0, check=at_most("class_end", strict=True)),
    "class_end": Option(None, int, "one past the last class (default: num_classes)", SYN + " --class-end", min=1),
    "image_size": Option(224, int, "synthetic image side", SYN + " RandomResizedCrop(224), randn(..., 224, 224)",
                         min=1),
    # ---- optimisation ----
    "iterations": Option(4000, int, "optimisation steps per batch", IN1K + " --iteration 4000", min=1),
    "lr": Option(0.25, float, "Adam learning rate (cosine schedule to 0, no warm-up)", IN1K + " --lr 0.25",
                 min=0, min_open=True),
    "r_bn": Option(0.01, float, "weight of the BN matching loss", IN1K + " --r-bn 0.01", min=0),
    "first_bn_multiplier": Option(10.0, float, "extra weight of the first BN layer", SYN + " --first-bn-multiplier 10",
                                  min=0),
    "adam_beta1": Option(0.5, float, "Adam beta1", SYN + " optim.Adam(betas=[0.5, 0.9], eps=1e-8)",
                         min=0, max=1, max_open=True),
    "adam_beta2": Option(0.9, float, "Adam beta2", SYN + " optim.Adam(betas=[0.5, 0.9], eps=1e-8)",
                         min=0, max=1, max_open=True),
    "adam_eps": Option(1e-8, float, "Adam eps", SYN + " optim.Adam(betas=[0.5, 0.9], eps=1e-8)", min=0),
    "jitter_min": Option(0, int, "circular shift drawn uniformly in [jitter_min, jitter_max] pixels per axis",
                         SYN + " random.randint(0, jitter)", check=at_most("jitter_max")),
    "jitter_max": Option(32, int, "see jitter_min", SYN + " --jitter 32", check=at_least("jitter_min")),
    "crop_scale_min": Option(0.08, float, "RandomResizedCrop scale range", SYN + " RandomResizedCrop default (0.08, 1)",
                             min=0, max=1, min_open=True, check=at_most("crop_scale_max")),
    "crop_scale_max": Option(1.0, float, "RandomResizedCrop scale range", SYN + " RandomResizedCrop default (0.08, 1)",
                             min=0, max=1, min_open=True),
    "clip": Option(True, bool, "after each step clamp pixels to the valid range of the normalised image",
                   SYN + " inputs.data = clip(inputs.data)"),
    "augment_draw": Option("per_group", str, "per_group: each optimisation batch (one class's, in LPLD mode) "
                                             "draws its own crop/flip/shift from a generator seeded by (seed, "
                                             "class), as the authors' one-class-per-step loop does, so an image "
                                             "depends only on (settings, seed, class); shared: one draw per step "
                                             "for all batches of the step (one crop op; faster) -- then the "
                                             "images depend on groups_per_step and on how classes are sharded",
                           SYN + " one RandomResizedCrop / flip / roll draw per optimised batch",
                           choices=("per_group", "shared")),
    # ---- speed ----
    "groups_per_step": Option(1, int, "independent batches optimised together in one step (same objective "
                                      "per batch). class mode: classes per step; sre2l mode: ipc indices per "
                                      "step. 1 = the authors' loop", min=1),
    "amp": Option(False, bool, "bf16 autocast for the teacher forward on CUDA (BN statistics and losses stay "
                               "fp32); off = the authors' fp32"),
    "channels_last": Option(True, bool, "channels_last memory format (cuDNN on CUDA, oneDNN on the CPU)"),
    "compile": Option(False, bool, "torch.compile the teacher (CUDA; first steps are slow while compiling)"),
    "device": Option("auto", str, "auto | cpu | cuda | cuda:N"),
    "seed": Option(0, int, "random seed; each class's noise and draws depend only on (seed, class)", min=0),
    # ---- output ----
    "output_dir": Option("recover/syn_data_LPLD", str, "root of the synthetic data (relative to the repo root; "
                                                          "download.sh puts the released images there too)",
                         IN1K + " --syn-data-path syn_data_LPLD (run from recover/)"),
    "exp_name": Option("LPLD_in1k_rn18_4k_ipc50", str, "sub-folder of output_dir holding new000/...",
                       IN1K + " --exp-name LPLD_in1k_rn18_4k_ipc${ipc}"),
    "jpeg_quality": Option(75, int, "JPEG quality", SYN + " PIL Image.save default quality", min=0, max=100),
    "progress": Option(True, bool, "progress bars (tqdm on a terminal, whole lines in a log)"),
    "log_every": Option(100, int, "refresh the progress-bar losses every N iterations", SYN + " save_every = 100",
                        min=1),
}
