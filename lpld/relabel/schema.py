"""Options of the relabel stage (FKD soft-label generation).

Key names are the authors' (``relabel_and_validate/generate_soft_label_pruning.py`` flags and the
``common`` / ``relabel`` sections of ``cfg/reproduce/*.yaml``), so their YAML files load as they are.
"""
from __future__ import annotations

from ..config import Option, at_most
from ..data import DATASET_ALIASES
from ..data.subset import CLASSES_OPTION
from ..labels.topk import label_quantization_rule as label_quantization_format

GEN = "authors' generate_soft_label_pruning.py"
CFG_IN1K = "authors' cfg/reproduce/LPLD_in1k_[4k].yaml"
LPQLD_GEN = "LPQLD generate_soft_label_pruning_batch.py"

DATASETS = (*DATASET_ALIASES, "tiny", "imagenet", "in21k", "imagefolder", "demo")


def _index_and_count(shard, values):
    """``batch_shard``: [index, count] with 0 <= index < count."""
    if len(shard) != 2:
        return "must be [index, count] (two integers)"
    index, count = shard
    return None if index < count else "must be [index, count] with index < count (shards are 0..count-1)"


RELABEL_SCHEMA = {
    # --- data ---------------------------------------------------------------------------------
    "dataset": Option("imagenet1k", str, "imagenet1k | imagenet21k | tiny (authors' names) or "
                      "imagenet | in21k | imagefolder | demo; selects normalisation, Cutout (21K) and "
                      "the default class count", GEN + " --dataset", choices=DATASETS),
    "train_dir": Option(None, str, "distilled images, ImageFolder layout (root/<class>/<image>)", GEN + " --train_dir"),
    "workers": Option(4, int, "DataLoader worker processes that load, crop and mix the images", GEN + " --workers",
                      min=0),
    "batch_size": Option(128, int, "images per batch; the student must train with the same batch size",
                         CFG_IN1K + " common.basic.batch_size (tiny 64, in21k 32)", min=1),
    "epochs": Option(300, int, "epochs of augmented views to label", CFG_IN1K + " (tiny 100)", min=1),
    "classes": CLASSES_OPTION,
    "num_classes": Option(None, int, "classes of the teacher (default: 1000 / 10450 / 200 by dataset or the "
                          "size of its class subset, the folder count for imagefolder/demo)", "authors' class_dict",
                          min=1),
    # --- teacher ------------------------------------------------------------------------------
    "model": Option("resnet18", str, "teacher architecture: torchvision name or timm/<name> "
                    "(imagenet21k uses timm's resnet18; a bare name is taken from timm there)", GEN + " --model"),
    "teacher_ckpt": Option(None, str, "teacher weights: a local file (torchvision's ImageNet "
                           "resnet18-f37072fd.pth, the Tiny teacher of squeeze/, the authors' released "
                           "checkpoints, the 21K-P timm checkpoint)", GEN + " --teacher_ckpt"),
    "weights": Option(None, str, "alias of teacher_ckpt"),
    "tiny_stem": Option(None, bool, "Tiny-ImageNet ResNet stem (3x3 conv1, no max-pool); default: on for tiny",
                        GEN + " (dataset == 'tiny')"),
    # --- augmentation (FKD) ---------------------------------------------------------------------
    "fkd_seed": Option(42, int, "seeds the RandomSampler image order and every recorded augmentation",
                       GEN + " --fkd-seed", min=0),
    "input_size": Option(224, int, "RandomResizedCrop output size (tiny: 64)", GEN + " --input-size", min=1),
    "min_scale_crops": Option(0.08, float, "RandomResizedCrop minimum area scale", GEN + " --min-scale-crops",
                              min=0, max=1, min_open=True, check=at_most("max_scale_crops")),
    "max_scale_crops": Option(1.0, float, "RandomResizedCrop maximum area scale", GEN + " --max-scale-crops",
                              min=0, max=1, min_open=True),
    "mix_type": Option(None, str, "cutmix | mixup | none (None in the YAML means none; imagenet21k "
                       "then uses Cutout)", GEN + " --mix-type; in1k cfg: cutmix, tiny/in21k: none"),
    "mixup": Option(0.8, float, "MixUp Beta(alpha, alpha)", GEN + " --mixup", min=0, min_open=True),
    "cutmix": Option(1.0, float, "CutMix Beta(alpha, alpha)", GEN + " --cutmix", min=0, min_open=True),
    "use_fp16": Option(True, bool, "store logits as float16 (float32 with --no-use-fp16)",
                       "every authors' cfg/reproduce/*.yaml sets use_fp16"),
    "mode": Option("fkd_save", str, "authors' mode switch; only fkd_save (generation) applies here",
                   GEN + " --mode", choices=("fkd_save",)),
    # --- label pruning ---------------------------------------------------------------------------
    "prune_ratio": Option(0.0, float, "generate only the first (1 - prune_ratio) share of all batches "
                          "(the authors' 'less label' mode); >0 also drops each epoch's last short batch",
                          GEN + " --prune_ratio", min=0, max=1, max_open=True),
    "drop_last": Option(None, bool, "drop each epoch's last short batch (default: prune_ratio > 0, as the authors)",
                        GEN + " drop_last"),
    # --- compact labels (LPQLD) ----------------------------------------------------------------
    "label_topk": Option(None, int, "keep only the k largest teacher logits of every view and their class "
                         "indices (LPQLD's MR-k; 0 or unset: all classes)",
                         "LPQLD generate_soft_label_pruning_batch.py --label_quantization MR-k", min=0),
    "label_quantization": Option(None, str, "the authors' spelling of label_topk: 'MR-10' = label_topk 10 "
                                 "(None: all classes)", LPQLD_GEN + " --label_quantization",
                                 check=label_quantization_format),
    "label_codec": Option("float16", str, "top-k values as float16, or uint8 codes with a per-row fp16 max/min "
                          "(half a code step of error; ours, not the authors')", choices=("float16", "uint8")),
    "augmentation": Option("recorded", str, "recorded: store every view's crop/flip/mix; regenerated: store "
                           "only a per-batch digest and draw the augmentation again at training time (ours; "
                           "the same torch version must train)", choices=("recorded", "regenerated")),
    # --- output ----------------------------------------------------------------------------------
    "output_dir": Option(None, str, "where the store goes (default: fkd_path)"),
    "fkd_path": Option("./FKD_soft_label", str, "authors' name of the output folder", GEN + " --fkd_path"),
    "format": Option("ours", str, "ours: memory-mapped arrays + manifest.json; authors: "
                     "epoch_{e}/batch_{b}.tar + sampler_indices_epoch.json; lpqld: the LPQLD code's flat "
                     "batch_{i}.tar + sampler_indices_batch.json", choices=("ours", "authors", "lpqld")),
    "resume": Option(True, bool, "continue an interrupted store with the same settings"),
    "overwrite": Option(False, bool, "replace an existing store with other settings"),
    "verify": Option(True, bool, "when resuming, first verify the checksum of every stored batch (a damaged "
                     "store is an error naming the batches; check-labels --repair regenerates them)"),
    "commit_every": Option(16, int, "publish progress every N batches (a crash loses at most these)", min=1),
    "stop_after": Option(0, int, "generate at most N batches in this run, then stop (resumable; 0 = all)", min=0),
    "batch_shard": Option(None, list, "[index, count]: generate only this contiguous share of the planned batches, "
                          "into <output_dir>.shards/ (lpld launch runs the shards as parallel jobs and merges them "
                          "into a store byte-identical to a single run)", item=int, min=0, check=_index_and_count),
    # --- runtime ---------------------------------------------------------------------------------
    "device": Option("auto", str, "auto | cpu | cuda | cuda:N"),
    "amp": Option(False, bool, "fp16 autocast for the teacher on CUDA (faster; logits then differ from "
                  "fp32 by more than fp16 rounding, so the replay check needs a looser tolerance)"),
    "channels_last": Option(True, bool, "channels_last teacher on CUDA"),
    "input_path": Option("pil", str, "pil: workers cut the views with PIL; device: decode the images once "
                         "into one uint8 tensor on the device and cut, flip and mix there (docs/benchmarks.md)",
                         choices=("pil", "device")),
    "progress": Option(True, bool, "tqdm progress bar"),
    # --- accepted for the authors' YAML/flags, no effect here ------------------------------------
    "seed": Option(None, int, "authors' global --seed; ignored: every draw comes from fkd_seed", GEN + " --seed",
                   ignored="relabel draws everything from fkd_seed"),
    "gpus": Option(None, str, "authors' CUDA_VISIBLE_DEVICES; ignored, use --device or the environment",
                   GEN + " --gpus", ignored="use --device or CUDA_VISIBLE_DEVICES"),
    # student-side keys a shared ``common`` section may carry (authors' train_FKD_label_pruning_batch.py)
    "prune_metric": Option(None, str, "validate-stage option; ignored by relabel", ignored="a validate option"),
    "granularity": Option(None, str, "validate-stage option; ignored by relabel", ignored="a validate option"),
    "prune_label": Option(None, bool, "validate-stage option; ignored by relabel", ignored="a validate option"),
    "val_dir": Option(None, str, "validate-stage option; ignored by relabel", ignored="a validate option"),
}
