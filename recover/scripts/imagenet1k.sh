#!/usr/bin/env bash
# LPLD recovery for ImageNet-1K (authors' recover/scripts/imagenet1k_recover.sh settings).
#   TEACHER=path/resnet18_0.pth GPUS=0,1,2,3 IPC=50 bash recover/scripts/imagenet1k.sh [extra recover.py flags]
# SRe2L baseline (paper Table 1): MODE_CONFIG=recover/configs/sre2l.yaml EXP=SRe2L_in1k_rn18_4k_ipc50 ...
set -euo pipefail
cd "$(dirname "$0")/../.."
source recover/scripts/_parallel.sh
TEACHER=${TEACHER:-recover/model_with_class_bn/resnet18_0.pth}
OUT=${OUT:-recover/syn_data_LPLD}  # where download.sh puts the released images
IPC=${IPC:-50}
GPUS=${GPUS:-0}
CLASS_START=${CLASS_START:-0}
CLASS_END=${CLASS_END:-1000}
EXP=${EXP:-LPLD_in1k_rn18_4k_ipc${IPC}}
MODE_CONFIG=${MODE_CONFIG:-}
run_recover_parallel "recover/configs/imagenet1k.yaml ${MODE_CONFIG}" "$@"
