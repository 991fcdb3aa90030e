#!/usr/bin/env bash
# Paper Table 5(a), ImageNet-1K: label-pruning metric (random vs order: draw the kept labels at
# random from the pool, or use them in generation order) and granularity (prune whole stored epochs
# vs single batches assembled into epochs: epoch vs batch_to_epoch; `batch` = batch_to_epoch without
# the authors' last-batch remapping). LPLD images, one full label store per IPC (shared with
# table3_in1k.sh), students as Table 3 with the metric / granularity varied.
# (Table 5(b), calibration, is not covered by these scripts.)
#
# Paper numbers: see paper Table 5 (not retrievable here; the IPC / ratio grid below is ours: set
# IPCS / RATIOS to the paper's). LPLD's choice, random + batch_to_epoch at 40x, gives the Table 3
# numbers (IPC10 20.2, IPC20 33.0, IPC50 46.7, IPC100 54.0, IPC200 59.6).
#
# Usage: VAL_DIR=/data/imagenet/val GPUS=0,1,2,3 bash relabel_and_validate/scripts/reproduce/table5_pruning_metric.sh
# Variables: VAL_DIR (required), GPUS [0], OUT, RESULTS, IMAGES_ROOT, LABELS_ROOT, TEACHER, RECOVER,
#   METRICS ["random order"], GRANULARITIES ["epoch batch_to_epoch"], IPCS ["10"],
#   RATIOS ["0.9 0.95 0.97 0.975"], STUDENTS [resnet18], SMOKE=1. More: _lib.sh.
# Granularity epoch keeps int((1 - r) x 300) whole epochs: at most 0.99 leaves one epoch.
source "$(dirname "${BASH_SOURCE[0]}")/_lib.sh"
lpld_setup table5 in1k
METRICS=$(pick "${METRICS:-}" "random order" "random order")
GRANULARITIES=$(pick "${GRANULARITIES:-}" "epoch batch_to_epoch" "epoch")
IPCS=$(pick "${IPCS:-}" "10" "$SMOKE_IPC")
RATIOS=$(pick "${RATIOS:-}" "0.9 0.95 0.97 0.975" "0.5")
STUDENTS=$(pick "${STUDENTS:-}" "resnet18" "resnet18")
PAPER_40X="10=20.2 20=33.0 50=46.7 100=54.0 200=59.6"
for ipc in $IPCS; do
    for student in $STUDENTS; do
        for ratio in $RATIOS; do
            for gran in $GRANULARITIES; do
                for metric in $METRICS; do
                    paper=""
                    [ "$student/$metric/$gran/$ratio" = resnet18/random/batch_to_epoch/0.975 ] && paper=$(paper_value "$ipc" $PAPER_40X)
                    run_cell lpld "$ipc" "$student" "$ratio" "$metric" "$gran" "$paper"
                done
            done
        done
    done
done
say "done: $RESULTS"
