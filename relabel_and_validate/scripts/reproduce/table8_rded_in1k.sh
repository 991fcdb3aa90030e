#!/usr/bin/env bash
# Paper Table 8, ImageNet-1K: LPLD's label pruning on images of an optimisation-free method, RDED
# (Sun et al., CVPR 2024): teacher-scored patches of real images, stitched 2 x 2. RDED images
# (lpld rded, recover/configs/rded_imagenet1k.yaml: RDED's scripts/imagenet-1k_10ipc_*_cr5.sh,
# factor 2, num_crop 5, mipc 300) are relabelled with the Table 3 recipe
# (relabel_and_validate/configs/imagenet1k.yaml) and students train on pruned labels, random /
# batch_to_epoch as LPLD. The random real subset of the same IPC is the control row.
#
# Paper numbers: paper Table 8 (the authors' README lists the table but not its numbers, and the
# paper text was not retrievable here; compare against the paper). For reference, LPLD images at
# IPC10 40x: 20.2 (Table 3).
#
# Usage (from any directory; extra pipeline flags go last and win, e.g. --ipcs 50 --seeds 0 1 2):
#   DATA_PATH=/data/imagenet bash relabel_and_validate/scripts/reproduce/table8_rded_in1k.sh [--device cuda]
#   SMOKE=1 bash relabel_and_validate/scripts/reproduce/table8_rded_in1k.sh     # CPU smoke run, a minute
# Stopped (Ctrl-C, a scheduler's time limit)? Run the same command again: it resumes. Results:
# OUT/results.md (.csv, .json, .png); environment: see _lib.sh.
source "$(dirname "${BASH_SOURCE[0]}")/_lib.sh"
reproduce in1k table8 \
    --methods rded random_real \
    --ipcs 10 \
    --prune-ratios 0 0.9 0.95 0.97 0.975 \
    --label-mode full \
    --smoke --prune-ratios 0 0.9 \
    -- "$@"
