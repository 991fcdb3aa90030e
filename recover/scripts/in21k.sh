#!/usr/bin/env bash
# LPLD recovery for ImageNet-21K-P (authors' recover/scripts/in21k_recover.sh settings).
#   TEACHER=path/resnet18_21k_0.pth GPUS=0,1,2,3,4,5,6,7 IPC=10 bash recover/scripts/in21k.sh [extra flags]
set -euo pipefail
cd "$(dirname "$0")/../.."
source recover/scripts/_parallel.sh
TEACHER=${TEACHER:-recover/model_with_class_bn/resnet18_21k_0.pth}
OUT=${OUT:-recover/syn_data_LPLD}  # where download.sh puts the released images
IPC=${IPC:-10}
GPUS=${GPUS:-0}
CLASS_START=${CLASS_START:-0}
CLASS_END=${CLASS_END:-10450}
EXP=${EXP:-LPLD_in21k_rn18_2k_ipc${IPC}}
MODE_CONFIG=${MODE_CONFIG:-}
run_recover_parallel "recover/configs/in21k.yaml ${MODE_CONFIG}" "$@"
