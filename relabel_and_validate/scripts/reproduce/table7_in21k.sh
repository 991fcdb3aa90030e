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
#
# Usage (from any directory; extra pipeline flags go last and win, e.g. --ipcs 50 --seeds 0 1 2):
#   DATA_PATH=/data/imagenet21k bash relabel_and_validate/scripts/reproduce/table7_in21k.sh [--device cuda]
#   SMOKE=1 bash relabel_and_validate/scripts/reproduce/table7_in21k.sh     # CPU smoke run, a minute
# Stopped (Ctrl-C, a scheduler's time limit)? Run the same command again: it resumes. Results:
# OUT/results.md (.csv, .json, .png); environment: see _lib.sh.
source "$(dirname "${BASH_SOURCE[0]}")/_lib.sh"
reproduce in21k table7 \
    --methods lpld \
    --ipcs 10 20 \
    --prune-ratios 0.975 0.97 0.95 0.9 0.0 \
    --label-mode full \
    --prune-schemes random/batch_to_epoch \
    --smoke --prune-ratios 0.0 \
    -- "$@"
