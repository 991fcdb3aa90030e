#!/usr/bin/env bash
# One step of the Tiny-ImageNet pipeline per GPU-machine call (see experiments/tiny_imagenet/README.md).
# Every step is bounded by BUDGET_S seconds (default 540, inside the 600 s call limit), resumable by
# repeating the same call, and leaves what must come back under $OUT (<= 8 files, <= 16 MiB each).
#
#   gpu_call.sh stage SHARD...            unpack carried shards ($CARRY/tiny/*.tar.gz) into $WORK/tiny
#   gpu_call.sh teacher                   train / resume the teacher (all four train shards staged)
#   gpu_call.sh class_stats               class-BN pass -> fp16 teacher parts (with and without the
#                                         class-BN statistics) + real features -> $OUT
#   gpu_call.sh recover METHOD IPC A B [ITERATIONS]
#                                         recover classes [A, B) -> $OUT/METHOD_ipcIPC_cA-B.tar
#   gpu_call.sh relval METHOD IPC RATIO...
#                                         relabel + validate each prune ratio (in parallel) ->
#                                         $OUT/runs_METHOD_ipcIPC_*.tar.gz (+ features_METHOD_ipcIPC.pt)
#   METHOD: lpld (class-wise batches + class BN statistics) | sre2l (across-class batches, global BN)
#
# Steps may be chained in one call: gpu_call.sh stage train-3 -- teacher
# Env: CARRY (.carry: carried inputs), WORK (.data: machine-local work, kept while the machine stays
# warm), OUT (set by the device tool), PYTHON (python), BUDGET_S (540), STEP_MARGIN_S (45).
# Reductions (state each one next to its result): TEACHER_ARGS, RECOVER_ARGS, RELABEL_ARGS,
# VALIDATE_ARGS are appended to the stage CLIs, e.g. VALIDATE_ARGS="--train-epochs 50".
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$REPO"
HERE=experiments/tiny_imagenet
CARRY=${CARRY:-.carry}
WORK=${WORK:-.data}
OUT=${OUT:-$WORK/out}
PYTHON=${PYTHON:-python}
BUDGET_S=${BUDGET_S:-540}
STEP_MARGIN_S=${STEP_MARGIN_S:-45}   # kept for packing results after the last timed command
DEADLINE=$(( $(date +%s) + BUDGET_S ))
TINY=$WORK/tiny
TEACHER_DIR=$WORK/teacher
TEACHER_FP16=$WORK/teacher_fp16.pth          # with class-BN statistics: recovery
TEACHER_PLAIN=$WORK/teacher_plain_fp16.pth   # without (~4 MB smaller): relabel, validate, features
export PYTHONUNBUFFERED=1
mkdir -p "$WORK" "$OUT"

say() { echo "[gpu_call $(date -u +%H:%M:%S)] $*"; }
die() { echo "[gpu_call] error: $*" >&2; exit 2; }
left() { echo $(( DEADLINE - $(date +%s) - STEP_MARGIN_S )); }
timed() {  # timed CMD...: run under the remaining budget; a timeout (124) is not an error: repeat the call
    local budget rc=0
    budget=$(left)
    [ "$budget" -gt 20 ] || { say "no time left for: $*"; return 124; }
    timeout --signal=TERM --kill-after=20 "$budget" "$@" || rc=$?
    [ $rc -eq 124 ] && say "time budget reached; repeat this call to resume"
    return $rc
}

method_config() {
    case "$1" in
        lpld) echo "recover/configs/tiny.yaml" ;;
        sre2l) echo "recover/configs/tiny.yaml recover/configs/sre2l.yaml" ;;
        *) die "METHOD must be lpld or sre2l; got '$1'" ;;
    esac
}

need_teacher() {  # need_teacher class|plain: join the carried parts once; echo the checkpoint path
    local kind=$1 name path
    if [ "$kind" = class ]; then name=teacher_fp16.pth; path=$TEACHER_FP16; else name=teacher_plain_fp16.pth; path=$TEACHER_PLAIN; fi
    if [ ! -f "$path" ]; then
        if ls "$CARRY/teacher/$name.part-"* >/dev/null 2>&1; then
            "$PYTHON" "$HERE/fp16_checkpoint.py" join "$CARRY/teacher" "$path" --name "$name" >&2
        elif [ "$kind" = plain ] && [ -f "$TEACHER_FP16" ] || ls "$CARRY/teacher/teacher_fp16.pth.part-"* >/dev/null 2>&1; then
            need_teacher class >/dev/null  # the class-BN teacher serves too (its class buffers are skipped)
            path=$TEACHER_FP16
        else
            die "no teacher: carry $CARRY/teacher ($name.part-* + .sha256; prepare_carry.sh item teacher or teacher:plain)"
        fi
    fi
    echo "$path"
}

images_dir() {  # images_dir METHOD IPC: unpack the carried image tars (never the recovery's work folder)
    local dir=$WORK/train_images/$1_ipc$2 t
    mkdir -p "$dir"
    for t in "$CARRY"/images/"$1"_ipc"$2"_c*.tar; do
        [ -e "$t" ] || continue
        tar -xf "$t" -C "$dir"
    done
    [ -n "$(ls "$dir" 2>/dev/null)" ] || die "no images for $1 IPC $2: carry $CARRY/images/$1_ipc$2_c*.tar"
    echo "$dir"
}

step_stage() {
    [ $# -ge 1 ] || die "stage needs shard names (train-0..train-3, val)"
    TINY_SRC=$CARRY/tiny bash "$HERE/stage_data.sh" "$TINY" "$@"
}

step_teacher() {
    local s missing=() resume=()
    for s in train-0 train-1 train-2 train-3 val; do
        [ -f "$TINY/.staged/$s" ] || missing+=("$s")
    done
    [ ${#missing[@]} -eq 0 ] || die "teacher needs the full training set; not staged on this machine: ${missing[*]} (stage them first; a machine that went cold starts empty)"
    [ -f "$TEACHER_DIR/checkpoint.pth" ] && resume=(--resume)
    local rc=0
    timed "$PYTHON" "$HERE/run_step.py" "$TEACHER_DIR" "step=train_$(date +%s)" -- \
        "$PYTHON" squeeze/train.py --config squeeze/configs/tiny.yaml squeeze/configs/tiny_train.yaml \
        --data-path "$TINY" --output-dir "$TEACHER_DIR" --workers 14 --no-progress "${resume[@]}" ${TEACHER_ARGS:-} || rc=$?
    tar -czf "$OUT/teacher_logs.tar.gz" -C "$WORK" --exclude='*.pth' teacher
    if [ -f "$TEACHER_DIR/teacher.pth" ]; then say "teacher finished: $TEACHER_DIR/teacher.pth"; else say "teacher not finished (rc=$rc): repeat 'teacher'"; fi
    [ $rc -eq 0 ] || [ $rc -eq 124 ]
}

step_class_stats() {
    [ -f "$TEACHER_DIR/teacher.pth" ] || die "no $TEACHER_DIR/teacher.pth: run 'teacher' to the end first"
    timed "$PYTHON" "$HERE/run_step.py" "$TEACHER_DIR" step=class_stats -- \
        "$PYTHON" squeeze/class_stats.py --config squeeze/configs/tiny.yaml --data-path "$TINY" \
        --weights "$TEACHER_DIR/teacher.pth" --output "$TEACHER_DIR/teacher_class_bn.pth" --workers 14 --no-progress ||
        die "class statistics did not finish (see $TEACHER_DIR/step_class_stats.log): repeat the call"
    "$PYTHON" "$HERE/fp16_checkpoint.py" export "$TEACHER_DIR/teacher_class_bn.pth" "$OUT"
    "$PYTHON" "$HERE/fp16_checkpoint.py" export "$TEACHER_DIR/teacher_class_bn.pth" "$OUT" --plain \
        --name teacher_plain_fp16.pth
    "$PYTHON" "$HERE/fp16_checkpoint.py" join "$OUT" "$TEACHER_FP16"
    # the fp16 teacher is what every later stage uses: measure what the cast costs
    timed "$PYTHON" "$HERE/run_step.py" "$TEACHER_DIR" step=fp16_check -- "$PYTHON" - "$TEACHER_FP16" "$TINY" \
        <<'EOF' || say "fp16 check did not finish: evaluate $TEACHER_FP16 later"
import json, sys, torch
from torch.utils.data import DataLoader
from lpld.data import TinyImageNet, val_transform
from lpld.engine import evaluate
from lpld.models import build_model
device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
loader = DataLoader(TinyImageNet(sys.argv[2], "val", val_transform(64, "tiny")), batch_size=500, num_workers=8)
model = build_model("resnet18", 200, tiny_stem=True, weights=sys.argv[1]).to(device)
print(json.dumps({"fp16_teacher_val": evaluate(model, loader, device, progress=False)}))
EOF
    timed "$PYTHON" -m lpld.analysis.diversity --config squeeze/configs/tiny.yaml --weights "$TEACHER_FP16" \
        --real "$TINY" --real-split train --real-per-class 50 --save-features --no-progress \
        --output-dir "$WORK/diversity_real" &&
        cp "$WORK/diversity_real/features_real.pt" "$OUT/features_real_train50.pt" ||
        say "real features not extracted: rerun them in a later call (they need the staged train set)"
    tar -czf "$OUT/teacher_logs.tar.gz" -C "$WORK" --exclude='*.pth' teacher
}

step_recover() {
    [ $# -ge 4 ] || die "recover needs METHOD IPC A B [ITERATIONS]"
    local method=$1 ipc=$2 a=$3 b=$4 iters=${5:-} extra=() c done_list=() missing=() teacher
    [ -n "$iters" ] && extra=(--iterations "$iters")
    method_config "$method" >/dev/null
    teacher=$(need_teacher class)
    local exp=${method}_ipc${ipc}
    # shellcheck disable=SC2046
    timed "$PYTHON" "$HERE/run_step.py" "$WORK/syn/logs_$exp" "step=recover_c${a}-${b}_$(date +%s)" \
        method="$method" ipc="$ipc" class_start="$a" class_end="$b" iterations="${iters:-config}" -- \
        "$PYTHON" recover/recover.py --config $(method_config "$method") --teacher "$teacher" \
        --ipc "$ipc" --class-start "$a" --class-end "$b" --output-dir "$WORK/syn" --exp-name "$exp" \
        --amp --no-progress "${extra[@]}" ${RECOVER_ARGS:-} || true
    for c in $(seq "$a" $(( b - 1 ))); do
        if [ -d "$WORK/syn/$exp/$(printf 'new%03d' "$c")" ]; then done_list+=("$(printf 'new%03d' "$c")"); else missing+=("$c"); fi
    done
    if [ ${#done_list[@]} -gt 0 ]; then
        tar -cf "$OUT/${exp}_c${a}-${b}.tar" -C "$WORK/syn/$exp" "${done_list[@]}"
    fi
    tar -czf "$OUT/recover_logs_${exp}_c${a}-${b}.tar.gz" -C "$WORK/syn" "logs_$exp" \
        $( [ -f "$WORK/syn/$exp/recover.json" ] && echo "$exp/recover.json" )
    if [ ${#missing[@]} -gt 0 ]; then
        say "INCOMPLETE: classes ${missing[*]} of [$a, $b) not finished; repeat the call (a cold machine: recover only those)"
    else
        say "classes [$a, $b) complete: $OUT/${exp}_c${a}-${b}.tar"
    fi
}

step_relval() {
    [ $# -ge 3 ] || die "relval needs METHOD IPC RATIO..."
    local method=$1 ipc=$2
    shift 2
    local ratios=("$@") r images pids=() n=$# workers teacher
    method_config "$method" >/dev/null
    teacher=$(need_teacher plain)
    images=$(images_dir "$method" "$ipc")
    workers=$(( ( $(nproc) - n ) / n )); [ "$workers" -ge 2 ] || workers=2
    for r in "${ratios[@]}"; do  # labels first (prune ratio p: only the first (1-p) of all batches)
        local run=$WORK/runs/${method}_ipc${ipc}_p$r labels=$WORK/labels/${method}_ipc${ipc}_p$r
        timed "$PYTHON" "$HERE/run_step.py" "$run" method="$method" ipc="$ipc" prune_ratio="$r" step=relabel \
            label_dir="$labels" -- "$PYTHON" relabel_and_validate/relabel.py \
            --config relabel_and_validate/configs/tiny.yaml --train-dir "$images" --teacher-ckpt "$teacher" \
            --prune-ratio "$r" --output-dir "$labels" --workers 12 --no-progress ${RELABEL_ARGS:-} || return 0
    done
    for r in "${ratios[@]}"; do  # students in parallel: a batch-64 ResNet-18 leaves the GPU mostly idle
        local run=$WORK/runs/${method}_ipc${ipc}_p$r labels=$WORK/labels/${method}_ipc${ipc}_p$r extra=()
        [ "$r" = "0" ] || [ "$r" = "0.0" ] && extra=(--prune-metric order --granularity epoch)  # authors' 1x setting
        [ -f "$run/val/checkpoint.pth" ] && extra+=(--resume)
        timed "$PYTHON" "$HERE/run_step.py" "$run" method="$method" ipc="$ipc" prune_ratio="$r" step=validate \
            label_dir="$labels" -- "$PYTHON" relabel_and_validate/validate.py \
            --config relabel_and_validate/configs/tiny.yaml --train-dir "$images" --label-dir "$labels" \
            --val-dir "$TINY" --prune-ratio "$r" --output-dir "$run/val" --workers "$workers" --no-progress \
            "${extra[@]}" ${VALIDATE_ARGS:-} > "$WORK/relval_$r.out" 2>&1 &
        pids+=($!)
    done
    local failed=0 p
    for p in "${pids[@]}"; do wait "$p" || failed=$(( failed + 1 )); done
    [ $failed -eq 0 ] || say "$failed student run(s) stopped early (timeout or error): see step_validate.log; repeat the call to resume"
    if [ ! -f "$OUT/features_${method}_ipc${ipc}.pt" ] && [ "$(left)" -gt 30 ]; then
        timed "$PYTHON" -m lpld.analysis.diversity --config squeeze/configs/tiny.yaml --weights "$teacher" \
            --syn "${method}=$images" --save-features --no-progress --output-dir "$WORK/diversity_$method" && \
            cp "$WORK/diversity_$method/features_${method}.pt" "$OUT/features_${method}_ipc${ipc}.pt" || true
    fi
    local tag
    tag=$(IFS=_; echo "${ratios[*]}")
    tar -czf "$OUT/runs_${method}_ipc${ipc}_p${tag}.tar.gz" -C "$WORK/runs" --exclude='*.pth' \
        $(for r in "${ratios[@]}"; do echo "${method}_ipc${ipc}_p$r"; done)
}

[ $# -ge 1 ] || { sed -n '2,22p' "$0" | sed 's/^# \{0,1\}//'; exit 1; }
say "device: $(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1 || echo none); budget ${BUDGET_S}s"
while [ $# -gt 0 ]; do
    step=$1
    shift
    args=()
    while [ $# -gt 0 ] && [ "$1" != "--" ]; do args+=("$1"); shift; done
    [ $# -gt 0 ] && shift  # the "--" between chained steps
    case "$step" in
        stage) step_stage "${args[@]}" ;;
        teacher) step_teacher ;;
        class_stats) step_class_stats ;;
        recover) step_recover "${args[@]}" ;;
        relval) step_relval "${args[@]}" ;;
        *) die "unknown step '$step' (stage, teacher, class_stats, recover, relval)" ;;
    esac
done
say "done; files for \$OUT: $(ls "$OUT" | tr '\n' ' ')"
