#!/usr/bin/env bash
# HALD (Cui et al., "Hard Labels In! Rethinking the Role of Hard Labels in Mitigating Local Semantic
# Drift", ICML 2026), ImageNet-1K: their github Jiacheng8/HALD (ffbca04) validate/scripts/imagenet1k/train.sh
# with train_fkd.py's defaults. LPLD images at IPC 10; SLC 100 soft labels per class, i.e. n = 10 stored
# epochs of 16-image batches, relabelled here (relabel_and_validate/configs/hald_in1k.yaml);
# ResNet-18 for 300 epochs: plan S6 = soft 75 -> hard 150 -> soft 75, soft epochs KL at T 20 without T^2
# on HALD's permuted pool of the 10 stored epochs, hard epochs on the images' class labels with CutMix
# (alpha 1) and label smoothing 0.8 at batch 16; AdamW lr 0.001 wd 0.01, cosine with eta 2, no EMA, fp32.
# A second row: the same students on hard labels only (0 label bytes).
#
# Published top-1 (their README.md:34 and OpenReview KmAQFT5F3Y: 41.8% "with only 285M storage for soft
# labels, outperforming prior state-of-the-art LPLD by 8.1%"; arXiv 2512.15647 v2/v3 abstract: 42.7%,
# +9.0% over LPLD, "reduces by 100X"). Neither names the student, IPC or image set. 285M matches 150 soft
# labels per class (SLC 150: 1000 x 150 x 1000 fp16 values); their script runs SLC 100 (191 MiB of
# labels), which is what this script reproduces. Differences from their code: docs/hald.md.
#
# Usage (from any directory; extra pipeline flags go last and win, e.g. --seeds 0 1 2 --students resnet50):
#   DATA_PATH=/data/imagenet bash relabel_and_validate/scripts/reproduce/hald_in1k.sh [--device cuda]
#   SMOKE=1 bash relabel_and_validate/scripts/reproduce/hald_in1k.sh     # CPU smoke run, a minute
# Stopped (Ctrl-C, a scheduler's time limit)? Run the same command again: it resumes. Results:
# OUT/results.md (.csv, .json, .png); environment: see _lib.sh.
source "$(dirname "${BASH_SOURCE[0]}")/_lib.sh"
reproduce in1k hald_in1k \
    --methods lpld \
    --ipcs 10 \
    --prune-ratios 0 \
    --label-plans S6 hard \
    --label-mode full \
    --label-names "lpld=HALD_bs16_slc100_in1k_ipc{ipc}" \
    --label-configs relabel_and_validate/configs/hald_in1k.yaml \
    --smoke --label-configs relabel_and_validate/configs/demo.yaml relabel_and_validate/configs/smoke.yaml \
    -- "$@"
