#!/usr/bin/env bash
# Paper Table 2(a): Tiny-ImageNet, ResNet-18 students on LPLD images, IPC 50 / 100, soft labels
# pruned 1x / 10x / 20x / 30x / 40x (prune ratio 0 / 0.9 / 0.95 / 0.97 / 0.975).
# Settings: the authors' relabel_and_validate/scripts/reproduce/main_table_tiny.sh (one full label
# store per IPC, pruned when the student trains; ratio 0 -> order / epoch, else random /
# batch_to_epoch) and cfg/reproduce/LPLD_tiny_[4k].yaml (= relabel_and_validate/configs/tiny.yaml).
#
# Paper numbers (top-1 %, authors' README table "Previous Soft Labels vs Ours" = Table 2):
#   LPLD 40x:                      IPC50 38.4   IPC100 46.1   (labels 11 MB / 22 MB)
#   previous, full labels (SRe2L): IPC50 41.1   IPC100 49.7   (labels 449 MB / 898 MB)
#   1x / 10x / 20x / 30x and Table 2(b) (larger students: set STUDENTS): see paper Table 2.
#
# Usage (from any directory):
#   VAL_DIR=/data/tiny-imagenet-200 GPUS=0 bash relabel_and_validate/scripts/reproduce/table2_tiny.sh
# Variables: VAL_DIR (required: the Tiny-ImageNet root or its val/), GPUS [0], OUT
#   [outputs/reproduce], RESULTS [$OUT/results.csv], IMAGES_ROOT [recover/syn_data_LPLD], LABELS_ROOT
#   [relabel_and_validate/syn_label_LPLD], TEACHER [recover/model_with_class_bn/resnet18_tiny_0.pth],
#   RELABEL_TEACHER [$TEACHER; the authors used recover/tiny_forward/resnet18_tiny_ep50.pth],
#   RECOVER=1 (recover missing images), IPCS ["50 100"], RATIOS ["0 0.9 0.95 0.97 0.975"],
#   STUDENTS [resnet18], SMOKE=1 (CPU smoke run on demo data). More: _lib.sh.
# Images: bash download.sh --datasets tiny --what images,teachers (or RECOVER=1 with a teacher).
# The authors: "very important for tiny-imagenet to NOT use multiple GPUs" -> keep GPUS a single id.
source "$(dirname "${BASH_SOURCE[0]}")/_lib.sh"
lpld_setup table2 tiny
IPCS=$(pick "${IPCS:-}" "50 100" "$SMOKE_IPC")
RATIOS=$(pick "${RATIOS:-}" "0 0.9 0.95 0.97 0.975" "0 0.9")
STUDENTS=$(pick "${STUDENTS:-}" "resnet18" "resnet18")
PAPER_40X="50=38.4 100=46.1"
run_grid lpld "$IPCS" "$STUDENTS" "$RATIOS" "$PAPER_40X"
say "done: $RESULTS"
