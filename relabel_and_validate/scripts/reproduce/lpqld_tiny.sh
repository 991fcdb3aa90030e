#!/usr/bin/env bash
# LPQLD on Tiny-ImageNet. The LPQLD authors publish no Tiny-ImageNet script or numbers: this
# variant is ours, their ImageNet-1K settings (lpqld_in1k.sh: top-k labels MR-100 / MR-50 / MR-10,
# prune ratio 0.9, step temperature schedule, student temperature 1.0) on the Table 2 recipe
# (relabel_and_validate/configs/tiny.yaml) at IPC 50, top-k 100 / 50 / 10 of the 200 classes.
#
# Published numbers: none (see above). Reference (LPLD, Table 2): IPC50 40x 38.4.
#
# Usage (from any directory; extra pipeline flags go last and win):
#   DATA_PATH=/data/tiny-imagenet-200 bash relabel_and_validate/scripts/reproduce/lpqld_tiny.sh [--device cuda]
#   SMOKE=1 bash relabel_and_validate/scripts/reproduce/lpqld_tiny.sh     # CPU smoke run, a minute
# Stopped (Ctrl-C, a scheduler's time limit)? Run the same command again: it resumes. Results:
# OUT/results.md (.csv, .json, .png); environment: see _lib.sh.
source "$(dirname "${BASH_SOURCE[0]}")/_lib.sh"
reproduce tiny lpqld_tiny \
    --methods lpld \
    --ipcs 50 \
    --label-topks 100 50 10 \
    --prune-ratios 0.9 \
    --label-mode full \
    --smoke --label-topks 0 1 --prune-ratios 0.5 \
    -- "$@"
