#!/usr/bin/env bash
# Paper Table 4 (ablation) and Table 19 (detailed ablation), ImageNet-1K: which part of LPLD's
# recovery makes the images tolerate pruned labels. Three image sets, each relabelled and
# validated like Table 3:
#   sre2l      across-class batching + global BN statistics     recover --mode sre2l (SRe2L)
#   cb_global  class-wise batching + global BN statistics       recover --mode class --bn-target global
#   lpld       class-wise batching + class-wise BN statistics   recover --mode class (LPLD)
# (Across-class batching cannot use class-wise statistics: a batch holds many classes.)
# Recovery settings: recover/configs/imagenet1k.yaml (authors' imagenet1k_recover.sh: 4K
# iterations, lr 0.25, r_bn 0.01) plus recover/configs/sre2l.yaml for sre2l (SRe2L recover.sh:
# 100 classes per batch); labels and students: relabel_and_validate/configs/imagenet1k.yaml.
#
# Paper numbers: see paper Table 4 and Table 19 (not retrievable here; the IPC and ratio grid below
# is ours: pass --ipcs / --prune-ratios to match it). For reference, LPLD at IPC10 40x: 20.2 (Table 3).
# Cost: recovering 1000 classes x IPC10 at 4K iterations, per method .
#
# Usage (from any directory; extra pipeline flags go last and win, e.g. --ipcs 50 --seeds 0 1 2):
#   DATA_PATH=/data/imagenet bash relabel_and_validate/scripts/reproduce/table4_19_ablation.sh [--device cuda]
#   SMOKE=1 bash relabel_and_validate/scripts/reproduce/table4_19_ablation.sh     # CPU smoke run, a minute
# Stopped (Ctrl-C, a scheduler's time limit)? Run the same command again: it resumes. Results:
# OUT/results.md (.csv, .json, .png); environment: see _lib.sh.
source "$(dirname "${BASH_SOURCE[0]}")/_lib.sh"
reproduce in1k table4_19 \
    --methods sre2l cb_global lpld \
    --ipcs 10 \
    --prune-ratios 0 0.9 0.95 0.97 0.975 \
    --label-mode full \
    --smoke --prune-ratios 0.9 \
    -- "$@"
