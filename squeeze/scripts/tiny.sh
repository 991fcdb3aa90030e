#!/usr/bin/env bash
# Stage 1 on Tiny-ImageNet: train the ResNet-18 teacher (modified stem, 50 epochs), then record
# class-wise BN statistics. Usage:
#   DATA=/path/to/tiny-imagenet-200 GPU=0 bash squeeze/scripts/tiny.sh [extra flags for train.py]
# Outputs: $OUT/teacher.pth, $OUT/checkpoint.pth (resumable), $OUT/metrics.csv and
# $CLASS_BN (default recover/model_with_class_bn/resnet18_tiny_0.pth, where recovery looks for it).
set -euo pipefail
cd "$(dirname "$0")/../.."
DATA=${DATA:?set DATA to the Tiny-ImageNet root (the folder with wnids.txt, train/ and val/)}
GPU=${GPU:-0}
OUT=${OUT:-outputs/squeeze/tiny_resnet18}
CLASS_BN=${CLASS_BN:-recover/model_with_class_bn/resnet18_tiny_0.pth}
export CUDA_VISIBLE_DEVICES=$GPU
RESUME=()
[ -f "$OUT/checkpoint.pth" ] && RESUME=(--resume)
python squeeze/train.py --config squeeze/configs/tiny.yaml squeeze/configs/tiny_train.yaml \
    --data-path "$DATA" --output-dir "$OUT" "${RESUME[@]}" "$@"
if [ -f "$CLASS_BN" ]; then
    echo "class-BN checkpoint $CLASS_BN exists; skipping the class-statistics pass"
else
    python squeeze/class_stats.py --config squeeze/configs/tiny.yaml --data-path "$DATA" \
        --weights "$OUT/teacher.pth" --output "$CLASS_BN"
fi
