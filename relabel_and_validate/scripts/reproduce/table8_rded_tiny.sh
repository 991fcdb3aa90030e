#!/usr/bin/env bash
# Tiny-ImageNet variant of paper Table 8 (the paper runs Table 8 on ImageNet-1K only; there are no
# published Tiny-ImageNet numbers): RDED images (lpld rded, recover/configs/rded_tiny.yaml: RDED's
# scripts/tinyimagenet_50ipc_*_cr5.sh, factor 1, num_crop 5, mipc 300, IPC 50) relabelled and
# validated with the Table 2 recipe (relabel_and_validate/configs/tiny.yaml), labels pruned 1x-40x,
# with the random real subset of the same IPC as the control row.
#
# Reference (LPLD images, Table 2): IPC50 40x 38.4.
#
# Usage (from any directory; extra pipeline flags go last and win, e.g. --ipcs 100 --seeds 0 1 2):
#   DATA_PATH=/data/tiny-imagenet-200 bash relabel_and_validate/scripts/reproduce/table8_rded_tiny.sh [--device cuda]
#   SMOKE=1 bash relabel_and_validate/scripts/reproduce/table8_rded_tiny.sh     # CPU smoke run, a minute
# Stopped (Ctrl-C, a scheduler's time limit)? Run the same command again: it resumes. Results:
# OUT/results.md (.csv, .json, .png); environment: see _lib.sh.
source "$(dirname "${BASH_SOURCE[0]}")/_lib.sh"
reproduce tiny table8_tiny \
    --methods rded random_real \
    --ipcs 50 \
    --prune-ratios 0 0.9 0.95 0.97 0.975 \
    --label-mode full \
    --smoke --prune-ratios 0.9 \
    -- "$@"
