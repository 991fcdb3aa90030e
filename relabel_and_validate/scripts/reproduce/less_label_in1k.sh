#!/usr/bin/env bash
# "Less label" variant of paper Table 3 (ImageNet-1K): for each prune ratio generate only the kept
# share of the soft labels (relabel --prune-ratio r), then train the student on exactly those.
# Settings: the authors' scripts/reproduce/less_label_in1k.sh (IPC 10 / 20 / 50 / 100 / 200, ratio
# 0.975, random / batch_to_epoch, label folders FKD_cutmix_fp16_LPLD_in1k_rn18_4k_ipc<N>_ratio975 =
# their download.sh 40x names; their gpus="0,1,2,3").
#
# Paper numbers (top-1 %, authors' README, 40x): IPC10 20.2, IPC20 33.0, IPC50 46.7, IPC100 54.0,
#   IPC200 59.6 (labels 0.14 / 0.29 / 0.71 / 1.43 / 2.85 GB). Other ratios (--prune-ratios ...): see paper
#   Table 3.
#
#   With `bash download.sh true --datasets in1k` the 40x labels are already there and only the
#   students train.
#
# Usage (from any directory; extra pipeline flags go last and win, e.g. --ipcs 50 --seeds 0 1 2):
#   DATA_PATH=/data/imagenet bash relabel_and_validate/scripts/reproduce/less_label_in1k.sh [--device cuda]
#   SMOKE=1 bash relabel_and_validate/scripts/reproduce/less_label_in1k.sh     # CPU smoke run, a minute
# Stopped (Ctrl-C, a scheduler's time limit)? Run the same command again: it resumes. Results:
# OUT/results.md (.csv, .json, .png); environment: see _lib.sh.
source "$(dirname "${BASH_SOURCE[0]}")/_lib.sh"
reproduce in1k less_label_in1k \
    --methods lpld \
    --ipcs 10 20 50 100 200 \
    --prune-ratios 0.975 \
    --label-mode less \
    --prune-schemes random/batch_to_epoch \
    --smoke --prune-ratios 0.9 \
    -- "$@"
