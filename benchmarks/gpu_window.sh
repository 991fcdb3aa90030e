#!/usr/bin/env bash
# One GPU window: run benchmarks/gpu_suite.py on this machine's GPU and leave its results in $OUT.
#
#   OUT=/path/to/results bash benchmarks/gpu_window.sh
#
# Environment (all optional):
#   OUT         where gpu_suite.json, gpu_suite.md and gpu_suite.log go (default: ./gpu_results)
#   COMMAND_S   the wall-clock limit of the command this runs in (default 540 s); the suite gets a
#               budget BUDGET_S slightly under it, so it stops starting measurements in time and the
#               results of everything that finished are on disk when the limit strikes
#   BUDGET_S    override the suite's budget (default: COMMAND_S - 60)
#   ONLY        sections to run, in order, e.g. "speed" or "stages speed" (default: tests speed stages)
#   PYTHON      the interpreter (default: python)
#   SMOKE=1     the CPU twin (--cpu-smoke) instead: checks this wrapper on a machine without a GPU
# Needs torch, torchvision, timm, numpy, Pillow, PyYAML and tqdm; pytest for the tests section (the
# suite records "not run: pytest is not installed here" without it); never submitit or gdown.
set -eu
set -o pipefail  # the suite's exit status, not tee's

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT="${OUT:-$PWD/gpu_results}"
COMMAND_S="${COMMAND_S:-540}"
BUDGET_S="${BUDGET_S:-$((COMMAND_S - 60))}"
PYTHON="${PYTHON:-python}"
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
# this tree's lpld whatever is installed; then .gpu_vendor/ when it travelled along (an ignored folder
# of pure-Python packages the machine lacks, e.g. pytest), after the installed packages
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"
if [ -d "$REPO/.gpu_vendor" ]; then export PYTHONPATH="$PYTHONPATH:$REPO/.gpu_vendor"; fi

args=(--output-dir "$OUT" --budget-s "$BUDGET_S")
if [ "${SMOKE:-0}" = 1 ]; then args+=(--cpu-smoke); fi
if [ -n "${ONLY:-}" ]; then
    # shellcheck disable=SC2206  # ONLY is a list of section names
    args+=(--only $ONLY)
fi

{
    echo "gpu_window: $(date -u +%FT%TZ) on ${HOSTNAME:-unknown host}; budget ${BUDGET_S}s of a ${COMMAND_S}s command"
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>&1 || true
    "$PYTHON" -c "import sys, torch; print('python', sys.version.split()[0], 'torch', torch.__version__, 'cuda', torch.version.cuda, 'available', torch.cuda.is_available())"
    "$PYTHON" -c "import pytest; print('pytest', pytest.__version__)" 2>/dev/null \
        || echo "pytest: not importable here (the tests section will record it)"
} 2>&1 | tee "$OUT/gpu_suite.log"

# the outer timeout is the last resort: the suite's own budget should end it first
timeout --signal=TERM --kill-after=15 "$((COMMAND_S - 20))" \
    "$PYTHON" "$REPO/benchmarks/gpu_suite.py" "${args[@]}" 2>&1 | tee -a "$OUT/gpu_suite.log"
