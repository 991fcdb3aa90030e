#!/usr/bin/env bash
# Stage 1 on ImageNet-1K. The authors did not retrain this teacher: class-wise BN statistics are
# added to torchvision's ImageNet ResNet-18 weights (resnet18-f37072fd.pth, IMAGENET1K_V1), which you
# pass as WEIGHTS (nothing is downloaded). Usage:
#   DATA=/path/to/imagenet WEIGHTS=/path/to/resnet18-f37072fd.pth GPU=0 bash squeeze/scripts/imagenet1k.sh
# DATA must hold train/<wnid>/*.JPEG and val/<wnid>/*.JPEG.
set -euo pipefail
cd "$(dirname "$0")/../.."
DATA=${DATA:?set DATA to the ImageNet-1K root (with train/ and val/)}
WEIGHTS=${WEIGHTS:?set WEIGHTS to torchvision ResNet-18 ImageNet weights (a local .pth file)}
GPU=${GPU:-0}
CLASS_BN=${CLASS_BN:-recover/model_with_class_bn/resnet18_0.pth}
export CUDA_VISIBLE_DEVICES=$GPU
if [ -f "$CLASS_BN" ]; then
    echo "class-BN checkpoint $CLASS_BN exists; nothing to do"
    exit 0
fi
python squeeze/class_stats.py --config squeeze/configs/imagenet1k.yaml --data-path "$DATA" \
    --weights "$WEIGHTS" --output "$CLASS_BN" "$@"
