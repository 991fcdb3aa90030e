# Shared by the paper-table scripts in this folder (sourced, never run directly). A table script is a
# header (what it reproduces, the published numbers) and one call:
#
#   reproduce DATASET TABLE [PIPELINE FLAGS...] [--smoke SMOKE FLAGS...] -- "$@"
#
# which runs the one orchestrator, lpld/pipeline/, with configs/pipeline/DATASET.yaml, the table's
# grid (methods, IPCs, prune ratios, students ...) and the caller's extra flags (last, so they win:
# e.g. --ipcs 50 --seeds 0 1 2 --device cuda). Everything else -- skipping finished steps, resuming an
# interrupted one, the results table -- is the pipeline's: run the same command again after a stop
# (Ctrl-C, a scheduler's time limit) and it continues; results.{md,csv,json,png} land in OUT.
#
# Environment (all optional; paths may be relative to where the script is called from):
#   OUT           output folder (students, results)            [outputs/reproduce/<table>]
#   DATA_PATH     real dataset root (real images for RDED / random-real, validation set)
#   VAL_DIR       validation set, when not under DATA_PATH
#   TEACHER       class-BN teacher                              [configs/pipeline/DATASET.yaml's]
#   RELABEL_TEACHER  teacher whose logits are the soft labels   [TEACHER]
#   IMAGES_ROOT, LABELS_ROOT  folders of image sets / label stores (download.sh's by default)
#   DEVICE        auto | cpu | cuda | cuda:N                    [auto]
#   PYTHON        python interpreter                            [python]
#   SMOKE=1       the same orchestration on a generated miniature dataset on the CPU
#                 (configs/pipeline/smoke.yaml) with the table's smaller --smoke grid, into a fresh
#                 temporary OUT unless OUT is set; SMOKE_ASSETS: folder for its data and teacher,
#                 shared between scripts.
set -euo pipefail

_LPLD_CALLER_PWD=$PWD
LPLD_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../../.." && pwd)

_abs() { case $1 in /*|"") printf '%s' "$1" ;; *) printf '%s/%s' "$_LPLD_CALLER_PWD" "$1" ;; esac; }

reproduce() {
    local dataset=$1 table=$2; shift 2
    local grid=() smoke=() user=() where=grid
    while [ $# -gt 0 ]; do
        case $where/$1 in
            grid/--smoke) where=smoke ;;
            */--) where=user ;;
            grid/*) grid+=("$1") ;;
            smoke/*) smoke+=("$1") ;;
            user/*) user+=("$1") ;;
        esac
        shift
    done
    local args=(--config "configs/pipeline/$dataset.yaml") out
    if [ "${SMOKE:-0}" = 1 ]; then
        out=${OUT:-$(mktemp -d "${TMPDIR:-/tmp}/lpld_smoke_$table.XXXXXX")}
        local assets=${SMOKE_ASSETS:-$out/assets}
        args=(--config "configs/pipeline/$dataset.yaml" configs/pipeline/smoke.yaml
              --data-path "$(_abs "$assets")/data" --squeeze-dir "$(_abs "$assets")/squeeze")
        grid+=(--ipcs 2 ${smoke[@]+"${smoke[@]}"})
    else
        out=${OUT:-outputs/reproduce/$table}
    fi
    args+=(--table "$table" --output-dir "$(_abs "$out")")
    local var flag
    for var in DATA_PATH:--data-path VAL_DIR:--val-dir TEACHER:--teacher RELABEL_TEACHER:--relabel-teacher \
               IMAGES_ROOT:--images-root LABELS_ROOT:--labels-root; do
        flag=${var#*:}; var=${var%%:*}
        if [ -n "${!var:-}" ]; then args+=("$flag" "$(_abs "${!var}")"); fi
    done
    if [ -n "${DEVICE:-}" ]; then args+=(--device "$DEVICE"); fi
    cd "$LPLD_ROOT"
    echo "[$table] ${PYTHON:-python} -m lpld.pipeline ${args[*]} ${grid[*]} ${user[*]+${user[*]}}"
    "${PYTHON:-python}" -m lpld.pipeline "${args[@]}" ${grid[@]+"${grid[@]}"} ${user[@]+"${user[@]}"}
}
