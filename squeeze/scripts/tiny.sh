#!/usr/bin/env bash
# Stage 1 on Tiny-ImageNet: train the ResNet-18 teacher (modified stem, 50 epochs), then record
# class-wise BN statistics. Usage:
#   DATA=/path/to/tiny-imagenet-200 GPU=0 bash squeeze/scripts/tiny.sh [extra flags for train.py]
# Every extra flag goes to train.py; those that define the teacher and its data (--model,
# --[no-]tiny-stem, --num-classes, --dataset, --data-path, --image-size, --batch-size, --workers,
# --device, --[no-]channels-last, --seed, --[no-]progress: the options class_stats.py shares with
# train.py, lpld.squeeze.cli.SHARED_OPTIONS) go to class_stats.py too, so that it builds the model
# trained. Training's own flags (--epochs, --lr, --amp ...) and an added --config stay with train.py.
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
    # the extra flags class_stats.py shares with train.py, shell-quoted
    shared=$(python -c 'import shlex, sys; from lpld.squeeze.cli import class_stats_flags
print(shlex.join(class_stats_flags(sys.argv[1:])))' "$@")
    eval "SHARED_FLAGS=($shared)"
    python squeeze/class_stats.py --config squeeze/configs/tiny.yaml --data-path "$DATA" \
        --weights "$OUT/teacher.pth" --output "$CLASS_BN" "${SHARED_FLAGS[@]}"
fi
