#!/usr/bin/env bash
# The whole pipeline on the built-in demo dataset (CPU, a few minutes): teacher, class-wise BN
# statistics, LPLD and SRe2L images, labels at 1x/10x/40x, students, results table.
#   bash run_demo.sh                                   # demo, outputs/demo/results.md
#   bash run_demo.sh --device cuda --config configs/pipeline/tiny.yaml --data-path /data/tiny-imagenet-200
# Re-running resumes: finished steps are skipped, interrupted ones continue.
set -euo pipefail
cd "$(dirname "$0")"
PYTHON=${PYTHON:-python}
exec "$PYTHON" -m lpld.cli demo "$@"
