#!/usr/bin/env bash
# Paper Table 20, ImageNet-1K at large IPCs (300 and 400), ResNet-18 students, Table 3 recipe
# (recover/configs/imagenet1k.yaml, relabel_and_validate/configs/imagenet1k.yaml). The authors
# teacher: 1000 classes x 300 (400) images at 4K iterations.
#
# Paper numbers: see paper Table 20 (not retrievable here; the ratio list below is Table 3's, set
#
# Storage: full labels scale with IPC (IPC200 needs 113 GB, so ~170 GB / ~227 GB here);
#
# Usage (from any directory; extra pipeline flags go last and win, e.g. --ipcs 50 --seeds 0 1 2):
#   DATA_PATH=/data/imagenet bash relabel_and_validate/scripts/reproduce/table20_high_ipc.sh [--device cuda]
#   SMOKE=1 bash relabel_and_validate/scripts/reproduce/table20_high_ipc.sh     # CPU smoke run, a minute
# Stopped (Ctrl-C, a scheduler's time limit)? Run the same command again: it resumes. Results:
# OUT/results.md (.csv, .json, .png); environment: see _lib.sh.
source "$(dirname "${BASH_SOURCE[0]}")/_lib.sh"
reproduce in1k table20 \
    --methods lpld \
    --ipcs 300 400 \
    --prune-ratios 0 0.9 0.95 0.97 0.975 \
    --label-mode full \
    --smoke --prune-ratios 0.9 \
    -- "$@"
