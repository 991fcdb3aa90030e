"""Options of the validate stage: train a student on distilled images + stored soft labels.

Key names follow the authors' ``relabel_and_validate/train_FKD_label_pruning_batch.py`` (and their
YAML files ``cfg/reproduce/LPLD_*.yaml``), so their configs read unchanged; the stage reads the
``common`` and ``validate`` sections. Defaults are the script's argparse defaults unless the
``source`` says otherwise; the per-dataset values live in ``relabel_and_validate/configs/*.yaml``.
"""
from __future__ import annotations

from ..config import PAPER_COMPRESSION, Option, compression_name
from ..data import DATASET_ALIASES, DATASETS
from ..data.subset import CLASSES_OPTION
from ..labels.topk import label_quantization_rule as label_quantization_format
from .hard import HARD_BATCH_SIZE, HARD_CUTMIX_ALPHA, HARD_LABEL_SMOOTHING
from .label_plan import PLAN_HELP, label_plan_rule
from .pruning import METRICS, PRUNE_MODES
from .selection import SELECTION_SCHEMA

SCRIPT = "authors' train_FKD_label_pruning_batch.py"
SH = "authors' scripts/reproduce/main_table_*.sh"
LPQLD = "LPQLD train_FKD_LPQLD.py"
LPQLD_SH = "LPQLD scripts/reproduce/lpqld_in1k.sh"
HALD = "HALD validate/train_fkd.py"
HALD_SH = "HALD validate/scripts/imagenet1k/train.sh"

# Dataset names: the authors' (imagenet1k, imagenet21k, tiny) and ours (lpld.data) are both accepted.
DATASET_NAMES = (*DATASET_ALIASES, *DATASETS)
PRUNE_RATIOS = {r: compression_name(r) for r in PAPER_COMPRESSION}


def _divides_batch_size(steps, values):
    """Each optimiser step's batch splits into equal forward/backward passes."""
    return None if values["batch_size"] % steps == 0 else "must divide batch_size"


VALIDATE_SCHEMA = {
    # --- data -----------------------------------------------------------------------------------
    "dataset": Option("imagenet1k", str, "imagenet1k | tiny | imagenet21k (authors' names) or "
                      "imagenet | in21k | demo | imagefolder", SCRIPT + " --dataset",
                      choices=DATASET_NAMES),
    "train_dir": Option(None, str, "distilled images, ImageFolder layout (authors' new000..new999)",
                        SCRIPT + " --train_dir"),
    "label_dir": Option(None, str, "soft-label store written by relabel (ours or the authors' "
                        "epoch_*/batch_*.tar folder)", SCRIPT + " --fkd_path"),
    "fkd_path": Option(None, str, "alias of label_dir (the authors' flag name)", SCRIPT + " --fkd_path"),
    "val_dir": Option(None, str, "real validation set: ImageNet val/ (class folders), Tiny-ImageNet "
                      "val/ (with val_annotations.txt) or its root, ImageNet-21K-P val/", SCRIPT + " --val_dir"),
    "classes": CLASSES_OPTION,
    "num_classes": Option(None, int, "classes (default: from the dataset or its subset / the label store)",
                          SCRIPT + " class_dict", min=1),
    "image_size": Option(None, int, "training crop size (default: the label store's)",
                         SCRIPT + " load_dataset: 224 ImageNet, 64 Tiny", min=1),
    "workers": Option(16, int, "data-loading worker processes", SCRIPT + " --workers", min=0),
    "teacher_ckpt": Option(None, str, "used by relabel only (accepted here because the authors' "
                           "in21k YAML puts it in the shared 'common' section)", ignored="a relabel option"),
    # --- student --------------------------------------------------------------------------------
    "model": Option("resnet18", str, "student: torchvision model name or timm/<name>", SCRIPT + " --model"),
    "tiny_stem": Option(None, bool, "3x3 stride-1 conv1, no max-pool (default: on for tiny, for students with conv1 + maxpool)",
                        SCRIPT + " main(): modifications for tiny imagenet"),
    # --- optimisation ---------------------------------------------------------------------------
    "batch_size": Option(1024, int, "images per optimiser step; must equal the label store's",
                         SCRIPT + " --batch_size", min=1),
    "gradient_accumulation_steps": Option(1, int, "split each batch into this many forward/backward "
                                          "passes (one optimiser step)", SCRIPT + " --gradient-accumulation-steps",
                                          min=1, check=_divides_batch_size),
    "epochs": Option(300, int, "epochs the labels were generated for (sets the pruning pool)",
                     SCRIPT + " --epochs", min=1),
    "train_epochs": Option(-1, int, "epochs to train (-1: = epochs)", SCRIPT + " --train_epochs",
                           min=1, sentinels=(-1,)),
    "sgd": Option(False, bool, "SGD instead of AdamW", SCRIPT + " --sgd"),
    "learning_rate": Option(1.024, float, "SGD learning rate", SCRIPT + " --learning-rate", min=0, min_open=True),
    "momentum": Option(0.875, float, "SGD momentum", SCRIPT + " --momentum", min=0, max=1, max_open=True),
    "weight_decay": Option(3e-5, float, "SGD weight decay", SCRIPT + " --weight-decay", min=0),
    "adamw_lr": Option(0.001, float, "AdamW learning rate", SCRIPT + " --adamw-lr", min=0, min_open=True),
    "adamw_weight_decay": Option(0.01, float, "AdamW weight decay", SCRIPT + " --adamw-weight-decay", min=0),
    "cos": Option(False, bool, "cosine schedule (else SRe2L's linear decay); with --sgd on tiny: "
                  "5 linear warm-up epochs from 0.01x", SCRIPT + " --cos"),
    "smoothing_lr": Option(False, bool, "cosine stretched by smoothing_lr_strength", SCRIPT + " --smoothing_lr"),
    "smoothing_lr_strength": Option(2.0, float, "stretch of the smoothed cosine", SCRIPT + " --smoothing_lr_strength",
                                    min=0, min_open=True),
    "temperature": Option(3.0, float, "distillation temperature T", SCRIPT + " --temperature", min=0, min_open=True),
    # --- LPQLD temperatures (defaults: LPLD's fixed T; LPQLD values in configs/lpqld_*.yaml) ---------
    "temp_scheduler": Option("none", str, "teacher temperature over the epochs: none (fixed T, LPLD) | step "
                             "(T * gamma^(e // step_size), floor 2) | cosine (T -> temp_min) | step_reverse | "
                             "cosine_reverse; e is the 1-based epoch as theirs",
                             LPQLD + " --temp_scheduler (lines 514-536); " + LPQLD_SH + ": step",
                             choices=("none", "step", "cosine", "step_reverse", "cosine_reverse")),
    "temp_step_size": Option(30, int, "step schedules: epochs per step", LPQLD_SH + " --temp_step_size 30", min=1),
    "temp_step_gamma": Option(0.7, float, "step schedules: factor per step", LPQLD_SH + " --temp_step_gamma 0.7 "
                              "(their argparse default 0.5)", min=0, min_open=True),
    "temp_min": Option(2.0, float, "cosine schedules: the last epoch's temperature",
                       LPQLD_SH + " --temp_min 2 (cosine rows; argparse default 1.0)", min=0, min_open=True),
    "temp_stu": Option(0.0, float, "fixed student temperature (> 0); 0: the teacher's T", LPQLD + " --temp_stu", min=0),
    "temp_stu_dynamic": Option(0.0, float, "> 0: calibrated student temperature, this value in the first epoch, "
                               "then after every epoch the grid value (0.01..1) minimising the KL on the epoch's "
                               "last micro-batch; used as the student's absolute temperature, as their code does",
                               LPQLD + " --temp_stu_dynamic (lines 813-825); " + LPQLD_SH + ": 1.0", min=0),
    "label_quantization": Option(None, str, "accepted for their configs: the label store decides whether labels "
                                 "are top-k (an MR-k here must match the store's k)", LPQLD + " --label_quantization",
                                 check=label_quantization_format),
    "loss": Option("auto", str, "kl: KLDiv(batchmean) to softmax(t/T); kl_t2: the authors' Tiny "
                   "variant, log_target=True and x T^2; auto: kl_t2 for tiny/demo, kl otherwise",
                   SCRIPT + " train()", choices=("auto", "kl", "kl_t2")),
    "label_smoothing": Option(0.0, float, "mix the stored logits with 1/K before the softmax "
                              "(authors' ImageNet-21K-P setting: 0.2)", SCRIPT + " --label_smoothing", min=0, max=1),
    "adamw_decay": Option(None, float, "accepted because the authors' in21k YAML sets it; their script "
                          "never reads it, and neither do we (the weight decay is adamw_weight_decay)",
                          "authors' cfg/reproduce/LPLD_in21k_[2k].yaml",
                          ignored="their trainer never reads it; the weight decay is adamw_weight_decay"),
    "ema": Option(False, bool, "validate an EMA of the weights", SCRIPT + " --ema"),
    "ema_decay": Option(0.99, float, "EMA decay (ema_pytorch beta)", SCRIPT + " --ema_decay", min=0, max=1),
    "mix_type": Option(None, str, "cutmix | mixup | None; must match the label store (the replayed "
                       "mix parameters come from the store)", SCRIPT + " --mix_type"),
    # --- label pruning --------------------------------------------------------------------------
    "prune_ratio": Option(0.0, float, "fraction of soft labels pruned: 0 (1x), 0.9 (10x), 0.95 (20x), "
                          "0.97 (30x), 0.975 (40x)", SH + " ratio", min=0, max=1, max_open=True),
    "prune_metric": Option("random", str, "random: draw batches/epochs from the pool; order: use them "
                           "in generation order; el2n | aum | entropy | forgetting | yoco: choose the pool "
                           "by score, then draw from it (docs/label_selection.md)", SH + " prune_metric",
                           choices=METRICS),
    "granularity": Option("batch_to_epoch", str, "epoch: reuse whole stored epochs; batch / "
                          "batch_to_epoch: assemble each epoch from single stored batches",
                          SH + " prune_granularity", choices=("epoch", "batch", "batch_to_epoch")),
    "replacement": Option(True, bool, "draw pool items with replacement (authors' torch.randint); "
                          "--no-replacement cycles through shuffled pools so every label is used "
                          "equally often", SCRIPT + " main(): torch.randint"),
    "remap_last_batch": Option(True, bool, "batch_to_epoch: replace the last batch of a stored epoch "
                               "by its predecessor", SCRIPT + " main(): '# drop last batch'"),
    "prune_mode": Option("lpld", str, "lpld: every epoch draws batches_per_epoch pool batches with replacement "
                         "(torch.randint) and remaps each stored epoch's last batch; lpqld: distinct batches per "
                         "epoch (their random.sample), no remapping", LPQLD + " lines 558, 580-586",
                         choices=PRUNE_MODES),
    **SELECTION_SCHEMA,  # prune_keep, selection_source, proxy_epochs, yoco_topk
    # --- label plan: soft and hard-label epochs (HALD; lpld.validate.label_plan, .hard) ----------------
    "label_plan": Option("soft", str, f"the kind of each epoch: {PLAN_HELP}. soft: every epoch on the stored "
                         "soft labels (LPLD); hard: every epoch on the images' class labels, no label store; "
                         "S1..S8 / a list: HALD's soft and hard segments in one run, soft epochs drawing HALD's "
                         "pool (docs/hald.md)", HALD + " --setting (line 128: S6 when HALD is used)",
                         check=label_plan_rule),
    "soft_epochs": Option(-1, int, "S1..S8: soft epochs S (-1: train_epochs - hard_epochs, or half of "
                          "train_epochs when both are -1); S + H must be train_epochs",
                          HALD_SH + " lines 25-26 (150 of 300); " + HALD + " --soft-epochs (line 130)",
                          min=0, sentinels=(-1,)),
    "hard_epochs": Option(-1, int, "S1..S8: hard epochs H (-1: train_epochs - soft_epochs)",
                          HALD_SH + " line 26 (300 - soft_epochs); " + HALD + " --hard-epochs (line 129)",
                          min=0, sentinels=(-1,)),
    "plan_block": Option(None, int, "HALD's n: the block length of S2-S5 and the stored epochs the soft pool "
                         "permutes (default: every whole stored epoch of the pool)",
                         HALD + " --n (line 132); " + HALD_SH + " line 28: n = slc / ipc, the stored epochs", min=1),
    "hard_batch_size": Option(HARD_BATCH_SIZE, int, "images per hard-epoch step (at most the distilled images)",
                              HALD + " --hard-batch-size (line 131)", min=1),
    "hard_label_smoothing": Option(HARD_LABEL_SMOOTHING, float, "hard epochs: targets (1 - e) * onehot + e / K "
                                   "before CutMix (not label_smoothing, which acts on stored logits)",
                                   HALD + " --label-smoothing (line 133), timm Mixup (lines 449-454)", min=0, max=1),
    "hard_cutmix_alpha": Option(HARD_CUTMIX_ALPHA, float, "hard epochs: CutMix lambda ~ Beta(a, a) on every batch, "
                                "box from the reversed batch, lambda corrected to the box (timm's Mixup); 0: no CutMix",
                                HALD + " Mixup(mixup_alpha=0.0, cutmix_alpha=1.0) (lines 449-454)", min=0),
    "seed": Option(0, int, "seed of the model init and of the pool draws", min=0),
    # --- run ------------------------------------------------------------------------------------
    "val_interval": Option(10, int, "validate after epochs 1, 1+N, 1+2N, ... and the last",
                           SCRIPT + " --val_interval", min=1),
    "output_dir": Option("outputs/validate", str, "checkpoints, metrics.csv/jsonl, final.json",
                         SCRIPT + " --output_dir"),
    "resume": Option(False, bool, "continue from output_dir/checkpoint.pth"),
    "checkpoint_interval": Option(1, int, "write checkpoint.pth every N epochs and after the last "
                                  "(authors: every epoch)", SCRIPT + " save_checkpoint", min=1),
    "device": Option("auto", str, "auto | cpu | cuda | cuda:N (torchrun: one GPU per process)"),
    "amp": Option(None, bool, "bf16 autocast for the student's forward/backward (default: on for CUDA, "
                  "off on CPU; --amp on CPU uses CPU autocast). The logits, the KD loss and the top-k "
                  "stay fp32 (docs/benchmarks.md: numerics)"),
    "channels_last": Option(None, bool, "channels_last memory format (default: on for CUDA)"),
    "compile": Option(False, bool, "torch.compile the student (the first steps compile)"),
    "compile_backend": Option("inductor", str, "torch.compile backend (inductor; aot_eager: no code "
                              "generation, for debugging)"),
    "fetcher": Option("patch", str, "patch: the run-time DataLoader fetcher (the authors' manual "
                      "PyTorch edit, scoped to our loader); getitems: no patch, Dataset.__getitems__",
                      "authors' README 'Necessary Modification for Pytorch'", choices=("patch", "getitems")),
    "input_path": Option("pil", str, "pil: DataLoader workers cut the recorded views with PIL, as "
                         "relabel did; device: decode the distilled images once into one uint8 tensor "
                         "on the device and cut and flip whole batches there (~100x less CPU per image; "
                         "PIL's fixed-point arithmetic, equal views where measured: docs/benchmarks.md)",
                         choices=("pil", "device")),
    "cache_images": Option(False, bool, "keep decoded distilled images in memory in every loader "
                           "process (saves decoding; memory: images x H x W x 3 bytes per worker)"),
    "prefetch_factor": Option(2, int, "batches prefetched per worker (each holds a uint8 batch in "
                              "shared memory)", min=1),
    "log_interval": Option(20, int, "refresh the progress-bar loss every N steps (one host "
                           "synchronisation each)", min=1),
    "progress": Option(True, bool, "tqdm progress bars"),
    "log_batches": Option(False, bool, "write output_dir/batches_rank<R>.jsonl: per step the stored "
                          "batch id and the image indices this process trained on (audit / tests)"),
    "max_steps_per_epoch": Option(0, int, "debug/benchmark: stop each epoch after N steps (0: all)", min=0),
}
