#!/usr/bin/env bash
# "Less label" variant of paper Table 3 (ImageNet-1K): for each prune ratio generate only the kept
# share of the soft labels (relabel --prune-ratio r), then train the student on exactly those.
# Settings: the authors' scripts/reproduce/less_label_in1k.sh (IPC 10 / 20 / 50 / 100 / 200, ratio
# 0.975, random / batch_to_epoch, label folders FKD_cutmix_fp16_LPLD_in1k_rn18_4k_ipc<N>_ratio975 =
# their download.sh 40x names; their gpus="0,1,2,3").
#
# Paper numbers (top-1 %, authors' README, 40x): IPC10 20.2, IPC20 33.0, IPC50 46.7, IPC100 54.0,
#   IPC200 59.6 (labels 0.14 / 0.29 / 0.71 / 1.43 / 2.85 GB). Other ratios (RATIOS=...): see paper
#   Table 3.
#
# Usage: VAL_DIR=/data/imagenet/val GPUS=0,1,2,3 bash relabel_and_validate/scripts/reproduce/less_label_in1k.sh
#   With `bash download.sh true --datasets in1k` the 40x labels are already there and only the
#   students train. Variables: as table3_in1k.sh (IPCS ["10 20 50 100 200"], RATIOS ["0.975"]).
source "$(dirname "${BASH_SOURCE[0]}")/_lib.sh"
lpld_setup less_label_in1k in1k
LABEL_MODE=less
IPCS=$(pick "${IPCS:-}" "10 20 50 100 200" "$SMOKE_IPC")
RATIOS=$(pick "${RATIOS:-}" "0.975" "0.9")
STUDENTS=$(pick "${STUDENTS:-}" "resnet18" "resnet18")
PAPER_40X="10=20.2 20=33.0 50=46.7 100=54.0 200=59.6"
run_grid lpld "$IPCS" "$STUDENTS" "$RATIOS" "$PAPER_40X"
say "done: $RESULTS"
