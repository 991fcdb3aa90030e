#!/usr/bin/env bash
# Paper Table 5(a), ImageNet-1K: label-pruning metric (random vs order: draw the kept labels at
# random from the pool, or use them in generation order) and granularity (prune whole stored epochs
# vs single batches assembled into epochs: epoch vs batch_to_epoch; `batch` = batch_to_epoch without
# the authors' last-batch remapping). LPLD images, one full label store per IPC (shared with
# table3_in1k.sh), students as Table 3 with the metric / granularity varied.
# The rule-based label-selection metrics the authors list but do not implement (el2n, entropy,
# aum, forgetting; defined in docs/label_selection.md, lpld/validate/selection.py) are rows too:
# they choose the pool by a score instead of at random.
# (Table 5(b), calibration, is not covered by these scripts.)
#
# Paper numbers: see paper Table 5 (not retrievable here; the IPC / ratio grid below is ours: pass
# --ipcs / --prune-ratios to match it). LPLD's choice, random + batch_to_epoch at 40x, gives the
# Table 3 numbers (IPC10 20.2, IPC20 33.0, IPC50 46.7, IPC100 54.0, IPC200 59.6).
#
# Granularity epoch keeps int((1 - r) x 300) whole epochs: at most 0.99 leaves one epoch.
#
# Usage (from any directory; extra pipeline flags go last and win, e.g. --ipcs 50 --seeds 0 1 2):
#   DATA_PATH=/data/imagenet bash relabel_and_validate/scripts/reproduce/table5_pruning_metric.sh [--device cuda]
#   SMOKE=1 bash relabel_and_validate/scripts/reproduce/table5_pruning_metric.sh     # CPU smoke run, a minute
# Stopped (Ctrl-C, a scheduler's time limit)? Run the same command again: it resumes. Results:
# OUT/results.md (.csv, .json, .png); environment: see _lib.sh.
source "$(dirname "${BASH_SOURCE[0]}")/_lib.sh"
reproduce in1k table5 \
    --methods lpld \
    --ipcs 10 \
    --prune-ratios 0.9 0.95 0.97 0.975 \
    --label-mode full \
    --prune-schemes random/epoch order/epoch random/batch_to_epoch order/batch_to_epoch \
                    el2n/batch_to_epoch entropy/batch_to_epoch aum/batch_to_epoch \
    --smoke --prune-ratios 0.5 --prune-schemes random/epoch order/epoch entropy/batch_to_epoch \
    -- "$@"
