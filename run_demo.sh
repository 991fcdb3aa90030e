#!/usr/bin/env bash
# The whole pipeline on the built-in demo dataset (CPU): teacher, class-wise BN statistics, LPLD,
# SRe2L, RDED and random-real images, labels at 1x/10x/40x, three students each, within-class
# diversity, and outputs/demo/results.md (+ .csv, .json, results.png).
#   bash run_demo.sh
#   bash run_demo.sh --seeds 0            # one seed: a third of the student time
# Re-running resumes: finished steps are skipped, an interrupted one continues.
set -euo pipefail
cd "$(dirname "$0")"
PYTHON=${PYTHON:-python}
exec "$PYTHON" -m lpld.cli pipeline --config configs/pipeline/demo.yaml "$@"
