#!/usr/bin/env bash
# Paper Table 6, ImageNet-1K, LPLD images and one full label store per IPC (shared with
# table3_in1k.sh); only the students differ:
#   (a) large pruning ratios     ResNet-18 students beyond 40x        rows: table6a
#   (b) ResNet-50 students       1x ... 40x                           rows: table6b
#   (c) cross-architecture       other student networks at 40x       rows: table6c
# Students are torchvision names (or timm/<name>), trained with the Table 3 recipe
# (relabel_and_validate/configs/imagenet1k.yaml; the authors' main_table_in1k.sh loops
# model=resnet${model_size} over the same flags).
#
# Paper numbers: see paper Table 6 (not retrievable here). The ratio lists and student networks
# below are ours, not the paper's: set LARGE_RATIOS / R50_RATIOS / CROSS_STUDENTS / CROSS_RATIOS and
# IPCS to match it. (ResNet-18 at 40x gives the Table 3 numbers: IPC10 20.2 ... IPC200 59.6.)
#
# Usage: VAL_DIR=/data/imagenet/val GPUS=0,1,2,3 bash relabel_and_validate/scripts/reproduce/table6_large_ratio_r50_cross_arch.sh
# Variables: VAL_DIR (required), GPUS [0], OUT, RESULTS, IMAGES_ROOT, LABELS_ROOT, TEACHER, RECOVER,
#   PARTS ["a b c"], IPCS ["10 20 50 100 200"], LARGE_RATIOS ["0.98 0.99 0.995"] (50x / 100x /
#   200x), R50_STUDENTS [resnet50], R50_RATIOS ["0 0.9 0.95 0.97 0.975"], CROSS_STUDENTS
#   ["resnet101 mobilenet_v2 efficientnet_b0"], CROSS_RATIOS ["0.975"], SMOKE=1. More: _lib.sh.
source "$(dirname "${BASH_SOURCE[0]}")/_lib.sh"
lpld_setup table6 in1k
PARTS=$(pick "${PARTS:-}" "a b c" "a b c")
IPCS=$(pick "${IPCS:-}" "10 20 50 100 200" "$SMOKE_IPC")
LARGE_RATIOS=$(pick "${LARGE_RATIOS:-}" "0.98 0.99 0.995" "0.95")
R50_STUDENTS=$(pick "${R50_STUDENTS:-}" "resnet50" "resnet50")
R50_RATIOS=$(pick "${R50_RATIOS:-}" "0 0.9 0.95 0.97 0.975" "0.9")
CROSS_STUDENTS=$(pick "${CROSS_STUDENTS:-}" "resnet101 mobilenet_v2 efficientnet_b0" "mobilenet_v2")
CROSS_RATIOS=$(pick "${CROSS_RATIOS:-}" "0.975" "0.9")
for part in $PARTS; do
    LPLD_TABLE=table6$part
    case $part in
        a) students=resnet18; ratios=$LARGE_RATIOS ;;
        b) students=$R50_STUDENTS; ratios=$R50_RATIOS ;;
        c) students=$CROSS_STUDENTS; ratios=$CROSS_RATIOS ;;
        *) die "PARTS: unknown part '$part' (a | b | c)" ;;
    esac
    run_grid lpld "$IPCS" "$students" "$ratios"
done
say "done: $RESULTS"
