#!/usr/bin/env bash
# Paper Table 7: ImageNet-21K-P (10,450 classes), ResNet-18 students on LPLD images, IPC 10 / 20.
# Settings: the authors' relabel_and_validate/scripts/reproduce/main_table_in21k.sh: one full label
# store per IPC (300 epochs, Cutout, batch 32; cfg/reproduce/LPLD_in21k_[2k].yaml =
# relabel_and_validate/configs/in21k.yaml), students at ratios 0.975 / 0.97 / 0.95 / 0.9 / 0.0, all
# with random / batch_to_epoch (their in21k scripts do not switch to order / epoch at 0.0),
# --val_interval 50, gpus="0,1,2,3".
#
# Paper numbers (top-1 %, authors' README table "Previous Soft Labels vs Ours"):
#   LPLD 40x:                      IPC10 21.3   IPC20 29.4   (labels 16 GB / 32 GB)
#   previous, full labels (SRe2L): IPC10 18.5   IPC20 20.5   (labels 643 GB / 1286 GB)
#   other ratios: see paper Table 7.
# Full labels are 643 GB (IPC10) / 1286 GB (IPC20) and the authors publish only the 40x ones: with
# those, run less_label_in21k.sh (or LABEL_MODE=less RATIOS=0.975 here).
#
# Usage: VAL_DIR=/data/imagenet21k_p/val GPUS=0,1,2,3 bash relabel_and_validate/scripts/reproduce/table7_in21k.sh
# Variables: VAL_DIR (required), GPUS [0], OUT, RESULTS, IMAGES_ROOT, LABELS_ROOT, TEACHER
#   [recover/model_with_class_bn/resnet18_21k_0.pth, also the relabel teacher], RECOVER=1, IPCS
#   ["10 20"], RATIOS ["0.975 0.97 0.95 0.9 0.0"], STUDENTS [resnet18], LABEL_MODE [full], SMOKE=1.
source "$(dirname "${BASH_SOURCE[0]}")/_lib.sh"
lpld_setup table7 in21k
IPCS=$(pick "${IPCS:-}" "10 20" "$SMOKE_IPC")
RATIOS=$(pick "${RATIOS:-}" "0.975 0.97 0.95 0.9 0.0" "0.0")
STUDENTS=$(pick "${STUDENTS:-}" "resnet18" "resnet18")
PAPER_40X="10=21.3 20=29.4"
run_grid lpld "$IPCS" "$STUDENTS" "$RATIOS" "$PAPER_40X"
say "done: $RESULTS"
