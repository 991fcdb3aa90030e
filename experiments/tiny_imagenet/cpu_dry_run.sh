#!/usr/bin/env bash
# CPU dry run of the diversity analysis on real Tiny-ImageNet data: proves the tool end to end,
# NOT a result. Stand-ins replace everything the GPU pipeline would produce:
#   teacher   = a RANDOM-INIT ResNet-18 (Tiny stem, 200 classes), saved fp16 with class-BN buffers
#   "synthetic" sets = real VALIDATION images in the authors' new{c:03d} layout:
#       standin_a = the first N val images of each class (val_annotations.txt order), standin_b = the next N
#   real      = training shard train-0, REAL_PER_CLASS images per class
# usage: experiments/tiny_imagenet/cpu_dry_run.sh [WORK_DIR]   (env: CLASSES=0:5 N=10 REAL_PER_CLASS=25)
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
WORK=${1:-/tmp/lpld_tiny_dry_run}
PYTHON=${PYTHON:-python}
CLASSES=${CLASSES:-0:5}
N=${N:-10}
REAL_PER_CLASS=${REAL_PER_CLASS:-25}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
cd "$REPO"

t0=$(date +%s)
bash experiments/tiny_imagenet/stage_data.sh "$WORK/tiny" val train-0
t_stage=$(( $(date +%s) - t0 ))

"$PYTHON" - "$WORK" "$CLASSES" "$N" <<'EOF'
import os, shutil, sys
import torch
from lpld.data import TinyImageNet
from lpld.models import build_model
work, classes, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
start, stop = map(int, classes.split(":"))
torch.manual_seed(0)
teacher = build_model("resnet18", 200, tiny_stem=True, class_aware=True)
sd = {k: (v.half() if v.is_floating_point() else v) for k, v in teacher.state_dict().items()}
torch.save({"model": sd, "note": "RANDOM INIT stand-in teacher for the CPU dry run"},
           os.path.join(work, "teacher_random_fp16.pth"))
val = TinyImageNet(os.path.join(work, "tiny"), "val")
for name, first in (("standin_a", 0), ("standin_b", n)):
    root = os.path.join(work, name)
    shutil.rmtree(root, ignore_errors=True)
    for c in range(start, stop):
        paths = [p for p, t in val.samples if t == c][first:first + n]
        os.makedirs(os.path.join(root, f"new{c:03d}"))
        for i, p in enumerate(paths):
            shutil.copy(p, os.path.join(root, f"new{c:03d}", f"class{c:03d}_id{i:03d}.jpg"))
print(f"stand-ins: {stop - start} classes x {n} val images per set; random fp16 teacher saved")
EOF

t1=$(date +%s)
"$PYTHON" -m lpld.analysis.diversity --config squeeze/configs/tiny.yaml \
    --weights "$WORK/teacher_random_fp16.pth" --device cpu --workers 0 --batch-size 64 --no-progress \
    --syn standin_a="$WORK/standin_a" standin_b="$WORK/standin_b" \
    --real "$WORK/tiny" --real-split train --real-per-class "$REAL_PER_CLASS" --classes "$CLASSES" \
    --save-features --output-dir "$WORK/diversity"
t_div=$(( $(date +%s) - t1 ))
echo "cpu_dry_run: staging ${t_stage} s, diversity ${t_div} s (OMP_NUM_THREADS=$OMP_NUM_THREADS); outputs in $WORK/diversity"
