#!/usr/bin/env bash
# Paper Table 6, ImageNet-1K, LPLD images and one full label store per IPC (shared with
# table3_in1k.sh); only the students differ:
#   (a) large pruning ratios (ResNet-18 beyond 40x), (b) ResNet-50 students, (c) other student
#   networks: one grid of students x ratios; the report has a row per student and ratio.
# Students are torchvision names (or timm/<name>), trained with the Table 3 recipe
# (relabel_and_validate/configs/imagenet1k.yaml; the authors' main_table_in1k.sh loops
# model=resnet${model_size} over the same flags).
#
# Paper numbers: see paper Table 6 (not retrievable here). The ratio list and student networks
# below are ours, not the paper's: pass --prune-ratios / --students to match it. (ResNet-18 at 40x
# gives the Table 3 numbers: IPC10 20.2 ... IPC200 59.6.)
#
# Usage (from any directory; extra pipeline flags go last and win, e.g. --ipcs 50 --seeds 0 1 2):
#   DATA_PATH=/data/imagenet bash relabel_and_validate/scripts/reproduce/table6_large_ratio_r50_cross_arch.sh [--device cuda]
#   SMOKE=1 bash relabel_and_validate/scripts/reproduce/table6_large_ratio_r50_cross_arch.sh     # CPU smoke run, a minute
# Stopped (Ctrl-C, a scheduler's time limit)? Run the same command again: it resumes. Results:
# OUT/results.md (.csv, .json, .png); environment: see _lib.sh.
source "$(dirname "${BASH_SOURCE[0]}")/_lib.sh"
reproduce in1k table6 \
    --methods lpld \
    --ipcs 10 20 50 100 200 \
    --prune-ratios 0.975 0.98 0.99 0.995 \
    --students resnet18 resnet50 mobilenet_v2 efficientnet_b0 \
    --label-mode full \
    --smoke --prune-ratios 0.9 --students resnet18 mobilenet_v2 \
    -- "$@"
