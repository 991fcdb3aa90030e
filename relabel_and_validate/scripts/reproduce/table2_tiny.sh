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
#   1x / 10x / 20x / 30x and Table 2(b) (larger students: --students): see paper Table 2.
#
# The authors: "very important for tiny-imagenet to NOT use multiple GPUs": run Tiny-ImageNet on one device.
#
# Usage (from any directory; extra pipeline flags go last and win, e.g. --ipcs 50 --seeds 0 1 2):
#   DATA_PATH=/data/tiny-imagenet-200 bash relabel_and_validate/scripts/reproduce/table2_tiny.sh [--device cuda]
#   SMOKE=1 bash relabel_and_validate/scripts/reproduce/table2_tiny.sh     # CPU smoke run, a minute
# Stopped (Ctrl-C, a scheduler's time limit)? Run the same command again: it resumes. Results:
# OUT/results.md (.csv, .json, .png); environment: see _lib.sh.
source "$(dirname "${BASH_SOURCE[0]}")/_lib.sh"
reproduce tiny table2 \
    --methods lpld random_real \
    --ipcs 50 100 \
    --prune-ratios 0 0.9 0.95 0.97 0.975 \
    --label-mode full \
    --smoke --methods lpld random_real --prune-ratios 0 0.9 \
    -- "$@"
