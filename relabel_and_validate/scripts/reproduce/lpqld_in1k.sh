#!/usr/bin/env bash
# LPQLD (Xiao & He, TPAMI 2026: soft-label pruning AND quantization), ImageNet-1K: the authors'
# scripts/reproduce/lpqld_in1k.sh of he-y/soft-label-pruning-quantization-for-dataset-distillation:
# LPLD images at IPC 10 / 20 / 50, labels kept as the top-k logits per view (MR-100 / MR-50 / MR-10:
# --label-topks 100 50 10), prune ratio 0.9, a step temperature schedule (20 -> x0.7 every 30
# epochs) and the calibrated student temperature 1.0. Those validate keys live in
# relabel_and_validate/configs/lpqld_in1k.yaml.
#
# Published ResNet-18 top-1 (their README, "Previous Soft Labels vs. Ours", storage / top-1):
#   IPC | full labels      | LPLD x40        | LPQLD x40 (MR-100) | x80 (MR-50)     | x200 (MR-10)
#    10 | 5.67 GB / 20.1%  | 0.14 GB / 20.2% | 0.13 GB / 29.6%    | 0.07 GB / 27.3% | 0.03 GB / 20.0%
#    20 | 11.33 GB / 33.6% | 0.29 GB / 33.0% | 0.25 GB / 41.2%    | 0.15 GB / 38.6% | 0.06 GB / 30.5%
#    50 | 28.33 GB / 46.8% | 0.71 GB / 46.7% | 0.63 GB / 51.3%    | 0.37 GB / 49.6% | 0.14 GB / 43.0%
#
# Usage (from any directory; extra pipeline flags go last and win, e.g. --ipcs 10 --seeds 0 1 2):
#   DATA_PATH=/data/imagenet bash relabel_and_validate/scripts/reproduce/lpqld_in1k.sh [--device cuda]
#   SMOKE=1 bash relabel_and_validate/scripts/reproduce/lpqld_in1k.sh     # CPU smoke run, a minute
# Stopped (Ctrl-C, a scheduler's time limit)? Run the same command again: it resumes. Results:
# OUT/results.md (.csv, .json, .png); environment: see _lib.sh.
source "$(dirname "${BASH_SOURCE[0]}")/_lib.sh"
reproduce in1k lpqld_in1k \
    --methods lpld \
    --ipcs 10 20 50 \
    --label-topks 100 50 10 \
    --prune-ratios 0.9 \
    --label-mode full \
    --label-configs relabel_and_validate/configs/lpqld_in1k.yaml \
    --smoke --label-topks 0 1 --prune-ratios 0.5 \
            --label-configs relabel_and_validate/configs/demo.yaml relabel_and_validate/configs/smoke.yaml \
    -- "$@"
