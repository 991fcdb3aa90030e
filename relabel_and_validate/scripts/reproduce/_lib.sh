# Shared library of the paper-table scripts in this folder (sourced, never run directly).
#
# A table script calls `lpld_setup <table> <tiny|in1k|in21k>` and then `run_cell` once per result
# it reproduces. run_cell runs the stages in order, skipping finished outputs:
#   images    <IMAGES_ROOT>/<exp>            used as they are when complete (downloaded with
#                                            download.sh or recovered before); recovered with
#                                            recover/scripts/<dataset>.sh when RECOVER=1 (the recover
#                                            CLI itself skips complete classes, so this resumes)
#   labels    <LABELS_ROOT>/FKD_<mix>_fp16_<exp>[_ratio<r>]
#                                            skipped when complete (ours: progress.json reached the
#                                            planned batch count; the authors' epoch_*/batch_*.tar
#                                            folders: taken as downloaded); else relabel (resumes)
#   student   <OUT>/students/<exp>_<labels>_<student>_r<ratio>_<metric>_<granularity>
#                                            skipped when final.json exists; else validate (with
#                                            --resume when a checkpoint is there)
# and appends one row per finished student to RESULTS (a CSV). Rows are keyed by (table, student
# folder): a re-run appends only the rows that are not there yet, so every finished run appears once
# per table and re-running a finished script changes nothing.
#
# Environment (every script):
#   PYTHON        python interpreter                      [python]
#   GPUS          comma-separated GPU ids: recovery splits the classes over them, validation runs
#                 `torchrun --nproc_per_node <n>` when n > 1, relabel uses the first  [0]
#   OUT           where students and logs go              [outputs/reproduce]
#   RESULTS       results CSV                             [$OUT/results.csv]
#   IMAGES_ROOT   distilled images                        [recover/syn_data_LPLD, download.sh's folder]
#   LABELS_ROOT   soft-label stores                       [relabel_and_validate/syn_label_LPLD]
#   VAL_DIR       real validation set (required): ImageNet val/ (class folders), the Tiny-ImageNet
#                 root or its val/, the ImageNet-21K-P val/
#   TEACHER       class-BN teacher for recovery           [recover/model_with_class_bn/resnet18{_tiny,,_21k}_0.pth]
#   RELABEL_TEACHER  teacher whose logits are the soft labels [$TEACHER; the same network]
#   RECOVER       1: recover missing / incomplete images with TEACHER  [0; 1 in scripts whose
#                 images are not downloadable]
#   LABEL_MODE    full: one store per image set, pruned when the student trains (the authors'
#                 main_table_*.sh); less: one store per prune ratio holding only the kept batches
#                 (their less_label_*.sh)
#   RECOVER_ARGS, RELABEL_ARGS, VALIDATE_ARGS   extra flags for the stage CLIs (word-split). A
#                 finished output is not redone when they change: use another OUT / LABELS_ROOT.
#   SMOKE=1       tiny CPU run on the built-in demo data (see smoke_setup): the same code path with
#                 the stage options overridden by extra flags; writes under a fresh temporary OUT.
#   SMOKE_ASSETS  smoke mode: folder holding (or receiving) the demo data and demo teacher
# Paths given in the environment may be relative to the directory the script is called from.

set -euo pipefail

_LPLD_CALLER_PWD=$PWD
LPLD_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../../.." && pwd)

_abs() {  # a user-given path, relative to where the script was called from
    case $1 in
        /*|"") printf '%s' "$1" ;;
        *) printf '%s/%s' "$_LPLD_CALLER_PWD" "$1" ;;
    esac
}
for _v in OUT RESULTS IMAGES_ROOT LABELS_ROOT VAL_DIR TEACHER RELABEL_TEACHER SMOKE_ASSETS; do
    if [ -n "${!_v:-}" ]; then printf -v "$_v" '%s' "$(_abs "${!_v}")"; fi
done
cd "$LPLD_ROOT"

PYTHON=${PYTHON:-python}
SMOKE=${SMOKE:-0}
GPUS=${GPUS:-0}
if [ "$SMOKE" = 1 ]; then
    OUT=${OUT:-$(mktemp -d "${TMPDIR:-/tmp}/lpld_reproduce_smoke.XXXXXX")}
    IMAGES_ROOT=${IMAGES_ROOT:-$OUT/syn_data}
    LABELS_ROOT=${LABELS_ROOT:-$OUT/syn_label}
else
    OUT=${OUT:-outputs/reproduce}
    IMAGES_ROOT=${IMAGES_ROOT:-recover/syn_data_LPLD}
    LABELS_ROOT=${LABELS_ROOT:-relabel_and_validate/syn_label_LPLD}
fi
RESULTS=${RESULTS:-$OUT/results.csv}
RECOVER_ARGS=${RECOVER_ARGS:-}
RELABEL_ARGS=${RELABEL_ARGS:-}
VALIDATE_ARGS=${VALIDATE_ARGS:-}
TORCHRUN=${TORCHRUN:-"$PYTHON -m torch.distributed.run"}

RESULTS_HEADER="table,dataset,method,ipc,student,label_mode,prune_ratio,compression,metric,granularity,top1,top5,best_top1,paper_top1,label_bytes_used,label_bytes_store,wall_s,out_dir,finished_utc"

say() { printf '[%s] %s\n' "${LPLD_TABLE:-reproduce}" "$*"; }
die() { printf '[%s] error: %s\n' "${LPLD_TABLE:-reproduce}" "$*" >&2; exit 1; }

# pick USER_VALUE REAL_DEFAULT SMOKE_DEFAULT: the user's value if set, else the mode's default.
pick() {
    if [ -n "$1" ]; then printf '%s' "$1"
    elif [ "$SMOKE" = 1 ]; then printf '%s' "$3"
    else printf '%s' "$2"; fi
}

# ---- smoke mode ----------------------------------------------------------------------------------
# Demo data (2 classes, 16 px) and a demo class-BN teacher (1 epoch of squeeze/train.py, then
# squeeze/class_stats.py), built once per SMOKE_ASSETS folder. Stage options are then overridden by
# flags appended after the real configs: demo dataset/normalisation, 16 px, ipc 2, 2 recovery
# iterations, labels for 10 epochs of 2 batches of 2 images (20 batches: a 10x pool holds 2, a 20x
# pool 1; 40x would need 40, so the smoke lists use ratios up to 0.95), CPU, one thread, no workers.
SMOKE_CLASSES=2
SMOKE_IPC=2
SMOKE_EPOCHS=10
smoke_setup() {
    SMOKE_ASSETS=${SMOKE_ASSETS:-$OUT/smoke_assets}
    local data=$SMOKE_ASSETS/data teacher=$SMOKE_ASSETS/teacher_class_bn.pth
    if [ ! -f "$teacher" ]; then
        say "smoke: building demo data and teacher in $SMOKE_ASSETS"
        mkdir -p "$SMOKE_ASSETS"
        "$PYTHON" -c "import sys; from lpld.data import make_demo_dataset; make_demo_dataset(sys.argv[1], num_classes=$SMOKE_CLASSES, image_size=16, train_per_class=8, val_per_class=4)" "$data"
        "$PYTHON" squeeze/train.py --config squeeze/configs/demo.yaml squeeze/configs/demo_train.yaml \
            --data-path "$data" --image-size 16 --epochs 1 --warmup-epochs 0 --batch-size 8 --workers 0 \
            --device cpu --no-amp --no-progress --output-dir "$SMOKE_ASSETS/squeeze"
        "$PYTHON" squeeze/class_stats.py --config squeeze/configs/demo.yaml --data-path "$data" \
            --weights "$SMOKE_ASSETS/squeeze/teacher.pth" --output "$teacher" --image-size 16 \
            --batch-size 8 --workers 0 --device cpu --no-amp --no-progress
    fi
    TEACHER=$teacher
    RELABEL_TEACHER=$teacher
    RECOVER=1  # nothing to download in smoke mode
    export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
    VAL_DIR=$data/val
    NUM_CLASSES=$SMOKE_CLASSES
    SMOKE_RECOVER_FLAGS=(--dataset demo --num-classes "$SMOKE_CLASSES" --model resnet18 --no-tiny-stem --image-size 16 --iterations 2
                         --groups-per-step "$SMOKE_CLASSES" --device cpu --no-amp --no-progress --log-every 1)
    SMOKE_RELABEL_FLAGS=(--dataset demo --num-classes "$SMOKE_CLASSES" --model resnet18 --no-tiny-stem --input-size 16 --epochs "$SMOKE_EPOCHS"
                         --batch-size 2 --workers 0 --device cpu --no-amp --no-progress)
    SMOKE_VALIDATE_FLAGS=(--dataset demo --num-classes "$SMOKE_CLASSES" --epochs "$SMOKE_EPOCHS" --batch-size 2 --workers 0 --device cpu
                          --no-amp --no-progress --val-interval 1000 --checkpoint-interval 1000)
}

# ---- per dataset ---------------------------------------------------------------------------------
# lpld_setup TABLE DATASET: names, configs and defaults of one paper table on tiny | in1k | in21k.
lpld_setup() {
    LPLD_TABLE=$1
    LPLD_DATASET=$2
    case $LPLD_DATASET in
        tiny)  RECOVER_SCRIPT=recover/scripts/tiny.sh;       LABEL_CONFIG=relabel_and_validate/configs/tiny.yaml
               NUM_CLASSES=200;   MIX=cutmix; ITERS=4k; DEFAULT_TEACHER=recover/model_with_class_bn/resnet18_tiny_0.pth ;;
        in1k)  RECOVER_SCRIPT=recover/scripts/imagenet1k.sh; LABEL_CONFIG=relabel_and_validate/configs/imagenet1k.yaml
               NUM_CLASSES=1000;  MIX=cutmix; ITERS=4k; DEFAULT_TEACHER=recover/model_with_class_bn/resnet18_0.pth ;;
        in21k) RECOVER_SCRIPT=recover/scripts/in21k.sh;      LABEL_CONFIG=relabel_and_validate/configs/in21k.yaml
               NUM_CLASSES=10450; MIX=cutout; ITERS=2k; DEFAULT_TEACHER=recover/model_with_class_bn/resnet18_21k_0.pth ;;
        *) die "unknown dataset '$LPLD_DATASET' (tiny | in1k | in21k)" ;;
    esac
    SMOKE_RECOVER_FLAGS=(); SMOKE_RELABEL_FLAGS=(); SMOKE_VALIDATE_FLAGS=()
    if [ "$SMOKE" = 1 ]; then
        smoke_setup
    else
        TEACHER=${TEACHER:-$DEFAULT_TEACHER}
        RELABEL_TEACHER=${RELABEL_TEACHER:-$TEACHER}
        [ -n "${VAL_DIR:-}" ] || die "set VAL_DIR to the real validation set (see the script's header)"
        [ -e "$VAL_DIR" ] || die "VAL_DIR $VAL_DIR does not exist"
    fi
    case $OUT$RESULTS$IMAGES_ROOT$LABELS_ROOT in *,*) die "paths must not contain commas (they go into a CSV)" ;; esac
    mkdir -p "$OUT/students"
    if [ "$LPLD_DATASET" = tiny ] && [ "$(gpu_count)" -gt 1 ]; then
        say "warning: the authors' Tiny-ImageNet scripts insist on ONE GPU (\"very important for tiny-imagenet to NOT use multiple GPUs\"); GPUS=$GPUS"
    fi
    say "dataset $LPLD_DATASET; OUT=$OUT RESULTS=$RESULTS GPUS=$GPUS$([ "$SMOKE" = 1 ] && echo ' (SMOKE)')"
}

# exp_name METHOD IPC: image-set name. lpld = the authors' released names (download.sh).
exp_name() {
    local method=$1 ipc=$2 base
    case $method in
        lpld)       base=LPLD ;;          # class-wise batching + class-wise BN statistics (ours: --mode class)
        sre2l)      base=SRe2L ;;         # across-class batching + global statistics (--mode sre2l)
        cb_global)  base=LPLD-globalBN ;; # class-wise batching + global statistics (--bn-target global)
        *) die "unknown method '$method' (lpld | sre2l | cb_global)" ;;
    esac
    printf '%s_%s_rn18_%s_ipc%s' "$base" "$LPLD_DATASET" "$ITERS" "$ipc"
}

# ratio_tag 0.975 -> 975: the authors' less_label_*.sh folder suffix (sed 's/0\.//g').
ratio_tag() { printf '%s' "$1" | sed 's/0\.//g'; }

# compression 0.975 -> 40x (the paper's names; 0.97 is "30x" there), else round(1 / (1 - r)).
compression() {
    case $1 in
        0|0.0) echo 1x ;; 0.9) echo 10x ;; 0.95) echo 20x ;; 0.97) echo 30x ;; 0.975) echo 40x ;;
        *) awk -v r="$1" 'BEGIN { printf "%dx\n", 1 / (1 - r) + 0.5 }' ;;
    esac
}

is_zero() { awk -v r="$1" 'BEGIN { exit !(r == 0) }'; }

first_gpu() { printf '%s' "${GPUS%%,*}"; }
gpu_count() { local IFS=,; local g=($GPUS); echo "${#g[@]}"; }

# ---- stage 2: images -----------------------------------------------------------------------------
count_class_dirs() {
    if [ -d "$1" ]; then find "$1" -mindepth 1 -maxdepth 1 -type d ! -name '.*' | wc -l; else echo 0; fi
}

# ensure_images METHOD IPC: sets IMG_DIR; recovers when RECOVER=1 and the set is missing/incomplete.
ensure_images() {
    local method=$1 ipc=$2 exp have
    exp=$(exp_name "$method" "$ipc")
    IMG_DIR=$IMAGES_ROOT/$exp
    have=$(count_class_dirs "$IMG_DIR")
    if [ "$have" -ge "$NUM_CLASSES" ]; then
        say "[skip] images $IMG_DIR: $have classes"
        return
    fi
    if [ "${RECOVER:-0}" != 1 ]; then
        die "images $IMG_DIR: $have of $NUM_CLASSES classes. Download them (bash download.sh --what images), point IMAGES_ROOT at them, or set RECOVER=1 (with TEACHER=$TEACHER) to recover them"
    fi
    [ -f "$TEACHER" ] || die "RECOVER=1 needs the class-BN teacher TEACHER=$TEACHER (download.sh --what teachers, or squeeze/scripts/*.sh)"
    local mode_config="" extra=()
    case $method in
        sre2l) mode_config=recover/configs/sre2l.yaml ;;
        cb_global) extra=(--mode class --bn-target global) ;;
    esac
    say "[run ] recover $exp ($have of $NUM_CLASSES classes present)"
    # shellcheck disable=SC2086
    TEACHER=$TEACHER OUT=$IMAGES_ROOT EXP=$exp IPC=$ipc GPUS=$GPUS CLASS_START=0 CLASS_END=$NUM_CLASSES \
        MODE_CONFIG=$mode_config PYTHON=$PYTHON \
        bash "$RECOVER_SCRIPT" "${extra[@]}" ${SMOKE_RECOVER_FLAGS[@]+"${SMOKE_RECOVER_FLAGS[@]}"} $RECOVER_ARGS
    have=$(count_class_dirs "$IMG_DIR")
    [ "$have" -ge "$NUM_CLASSES" ] || die "recovery of $IMG_DIR ended with $have of $NUM_CLASSES classes"
}

# ---- stage 3a: labels ----------------------------------------------------------------------------
labels_complete() {
    local dir=$1
    if [ -f "$dir/manifest.json" ]; then
        "$PYTHON" - "$dir" <<'EOF'
import json, os, sys
d = sys.argv[1]
planned = json.load(open(os.path.join(d, "manifest.json")))["planned_batches"]
try:
    committed = json.load(open(os.path.join(d, "progress.json")))["committed"]
except FileNotFoundError:
    committed = 0
sys.exit(0 if committed >= planned else 1)
EOF
        return
    fi
    compgen -G "$dir/epoch_*" > /dev/null  # the authors' format (downloaded): taken as complete
}

# ensure_labels IMG_DIR LABEL_DIR PRUNE_RATIO: generate (or finish) a store; PRUNE_RATIO > 0 keeps
# only the first (1 - ratio) share of the batches (the authors' "less label" generation).
ensure_labels() {
    local img=$1 dir=$2 ratio=$3
    if labels_complete "$dir"; then
        say "[skip] labels $dir"
        return
    fi
    [ -f "$RELABEL_TEACHER" ] || die "relabel needs RELABEL_TEACHER=$RELABEL_TEACHER (the teacher whose logits are the soft labels)"
    say "[run ] relabel $dir"
    mkdir -p "$(dirname "$dir")"
    # shellcheck disable=SC2086
    CUDA_VISIBLE_DEVICES=$(first_gpu) "$PYTHON" relabel_and_validate/relabel.py --config "$LABEL_CONFIG" \
        --train-dir "$img" --teacher-ckpt "$RELABEL_TEACHER" --output-dir "$dir" --prune-ratio "$ratio" \
        ${SMOKE_RELABEL_FLAGS[@]+"${SMOKE_RELABEL_FLAGS[@]}"} $RELABEL_ARGS
    labels_complete "$dir" || die "relabel left $dir incomplete"
}

# ---- stage 3b: student ---------------------------------------------------------------------------
# run_student IMG_DIR LABEL_DIR STUDENT RATIO METRIC GRANULARITY OUT_DIR
run_student() {
    local img=$1 labels=$2 student=$3 ratio=$4 metric=$5 gran=$6 out=$7
    if [ -f "$out/final.json" ]; then
        say "[skip] student $out"
        return
    fi
    mkdir -p "$out"
    local resume=() launcher n t0
    [ -f "$out/checkpoint.pth" ] && resume=(--resume)
    n=$(gpu_count)
    if [ "$n" -gt 1 ]; then
        # shellcheck disable=SC2206
        launcher=($TORCHRUN --standalone --nproc_per_node "$n")
    else
        launcher=("$PYTHON")
    fi
    say "[run ] validate $out (${launcher[*]})"
    t0=$(date +%s)
    # shellcheck disable=SC2086
    CUDA_VISIBLE_DEVICES=$GPUS "${launcher[@]}" relabel_and_validate/validate.py --config "$LABEL_CONFIG" \
        --train-dir "$img" --label-dir "$labels" --val-dir "$VAL_DIR" --model "$student" \
        --prune-ratio "$ratio" --prune-metric "$metric" --granularity "$gran" --output-dir "$out" \
        ${resume[@]+"${resume[@]}"} ${SMOKE_VALIDATE_FLAGS[@]+"${SMOKE_VALIDATE_FLAGS[@]}"} $VALIDATE_ARGS \
        2>&1 | tee -a "$out/validate.log"
    [ -f "$out/final.json" ] || die "validate finished without $out/final.json (log: $out/validate.log)"
    echo $(( $(date +%s) - t0 )) > "$out/wall_seconds.txt"
}

# ---- results -------------------------------------------------------------------------------------
# record_result TABLE METHOD IPC STUDENT LABEL_MODE RATIO METRIC GRANULARITY PAPER_TOP1 OUT_DIR
record_result() {
    local table=$1 method=$2 ipc=$3 student=$4 mode=$5 ratio=$6 metric=$7 gran=$8 paper=$9 out=${10}
    mkdir -p "$(dirname "$RESULTS")"
    if [ ! -s "$RESULTS" ]; then
        echo "$RESULTS_HEADER" > "$RESULTS"
    elif [ "$(head -n 1 "$RESULTS")" != "$RESULTS_HEADER" ]; then
        die "$RESULTS has other columns than this version writes; set RESULTS to a new file"
    elif awk -F, -v t="$table" -v o="$out" '$1 == t && $18 == o { found = 1 } END { exit !found }' "$RESULTS"; then
        say "[skip] result already in $RESULTS"
        return
    fi
    local metrics wall=""
    metrics=$("$PYTHON" - "$out/final.json" <<'EOF'
import json, sys
r = json.load(open(sys.argv[1]))
print(",".join(f"{r[k]:.2f}" if isinstance(r.get(k), float) else str(r.get(k, ""))
               for k in ("top1", "top5", "best_top1")))
print(",".join(str(r.get(k, "")) for k in ("label_bytes_used", "label_bytes_store")))
EOF
)
    [ -f "$out/wall_seconds.txt" ] && wall=$(cat "$out/wall_seconds.txt")
    local acc bytes
    acc=$(sed -n 1p <<< "$metrics"); bytes=$(sed -n 2p <<< "$metrics")
    echo "$table,$LPLD_DATASET,$method,$ipc,$student,$mode,$ratio,$(compression "$ratio"),$metric,$gran,$acc,$paper,$bytes,$wall,$out,$(date -u +%Y-%m-%dT%H:%M:%SZ)" >> "$RESULTS"
    say "result: $method ipc$ipc $student $(compression "$ratio") $metric/$gran top1,top5,best = $acc (paper: ${paper:--})"
}

# ---- one table cell ------------------------------------------------------------------------------
# run_cell METHOD IPC STUDENT RATIO [METRIC] [GRANULARITY] [PAPER_TOP1]
#   METRIC / GRANULARITY "" = the authors' choice: ratio 0 -> order / epoch ("do not use random
#   sampling for 0.0 ratio, as it keeps all the labels"), else random / batch_to_epoch; ImageNet-21K
#   always random / batch_to_epoch (main_table_in21k.sh / less_label_in21k.sh).
#   LABEL_MODE (full | less) selects the label store, see the header.
run_cell() {
    local method=$1 ipc=$2 student=$3 ratio=$4 metric=${5:-} gran=${6:-} paper=${7:-}
    local mode=${LABEL_MODE:-full}
    if [ -z "$metric" ] || [ -z "$gran" ]; then
        if is_zero "$ratio" && [ "$LPLD_DATASET" != in21k ]; then
            metric=${metric:-order}; gran=${gran:-epoch}
        else
            metric=${metric:-random}; gran=${gran:-batch_to_epoch}
        fi
    fi
    ensure_images "$method" "$ipc"
    local exp label_dir label_ratio
    exp=$(exp_name "$method" "$ipc")
    case $mode in
        full) label_dir=$LABELS_ROOT/FKD_${MIX}_fp16_$exp; label_ratio=0 ;;
        less) label_dir=$LABELS_ROOT/FKD_${MIX}_fp16_${exp}_ratio$(ratio_tag "$ratio"); label_ratio=$ratio ;;
        *) die "LABEL_MODE must be full or less; got '$mode'" ;;
    esac
    ensure_labels "$IMG_DIR" "$label_dir" "$label_ratio"
    local out=$OUT/students/${exp}_${mode}_${student}_r${ratio}_${metric}_${gran}
    run_student "$IMG_DIR" "$label_dir" "$student" "$ratio" "$metric" "$gran" "$out"
    record_result "$LPLD_TABLE" "$method" "$ipc" "$student" "$mode" "$ratio" "$metric" "$gran" "$paper" "$out"
}

# run_grid "METHODS" "IPCS" "STUDENTS" "RATIOS" ["PAPER_40X"]: one cell per ipc x method x student x
# ratio; with PAPER_40X ("ipc=top1 ..." pairs) the ResNet-18 40x cells carry the paper's top-1.
run_grid() {
    local ipc method student ratio paper
    for ipc in $2; do
        for method in $1; do
            for student in $3; do
                for ratio in $4; do
                    paper=""
                    [ -n "${5:-}" ] && [ "$student" = resnet18 ] && [ "$ratio" = 0.975 ] \
                        && paper=$(paper_value "$ipc" $5)
                    run_cell "$method" "$ipc" "$student" "$ratio" "" "" "$paper"
                done
            done
        done
    done
}

# paper_value KEY TABLE...: look up "KEY=value" in a space-separated list (empty if absent).
paper_value() {
    local key=$1; shift
    local kv
    for kv in "$@"; do
        [ "${kv%%=*}" = "$key" ] && { printf '%s' "${kv#*=}"; return; }
    done
    return 0
}
