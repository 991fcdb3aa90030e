#!/usr/bin/env bash
# Shared launcher, sourced by the dataset scripts: recover classes [CLASS_START, CLASS_END).
# One GPU: one recover.py process. Several GPUS (comma-separated ids): `lpld launch recover` splits
# the classes into one range per GPU and runs each as a job (submitit's local executor), waiting
# for all of them. EXECUTOR=slurm SHARDS=N submits a SLURM job array of N class ranges instead
# (partition, time, account ...: LAUNCH_ARGS="--partition gpu --time-min 1440", docs/cluster.md).
# Every job skips classes that are already complete, so re-running the same command resumes.
# Logs: $OUT/launch/<executor>/ (outside the image folder, which must hold class folders only).
set -euo pipefail

run_recover_parallel() {
  local config=$1; shift
  local py=${PYTHON:-python}
  local executor=${EXECUTOR:-local}
  IFS=',' read -ra gpu_list <<< "${GPUS}"
  local shards=${SHARDS:-${#gpu_list[@]}}
  local stage=(--config ${config} --teacher "${TEACHER}" --output-dir "${OUT}" --exp-name "${EXP}"
               --ipc "${IPC}" --class-start "${CLASS_START}" --class-end "${CLASS_END}")
  if [ "$executor" = local ] && [ "$shards" -eq 1 ]; then
    CUDA_VISIBLE_DEVICES=${gpu_list[0]} "$py" recover/recover.py "${stage[@]}" "$@"
    return
  fi
  mkdir -p "${OUT}"
  # shellcheck disable=SC2086  # LAUNCH_ARGS is a list of flags
  "$py" -m lpld.cli launch recover --executor "$executor" --recover-shards "$shards" \
    --local-gpus "${gpu_list[@]}" ${LAUNCH_ARGS:-} -- "${stage[@]}" --no-progress "$@"
}
