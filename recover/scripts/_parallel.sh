#!/usr/bin/env bash
# Shared launcher, sourced by the dataset scripts: split classes [CLASS_START, CLASS_END) evenly over
# the comma-separated GPU ids in GPUS, one recover.py process per GPU, and wait for all of them.
# Each process skips classes that are already complete, so re-running the same command resumes.
# Logs: $OUT/<exp>.gpu<i>.log (outside the image folder, which must hold class folders only).
set -euo pipefail

run_recover_parallel() {
  local config=$1; shift
  local py=${PYTHON:-python}
  IFS=',' read -ra gpu_list <<< "${GPUS}"
  local n=${#gpu_list[@]}
  local total=$(( CLASS_END - CLASS_START ))
  mkdir -p "${OUT}"
  if [ "$n" -eq 1 ]; then
    CUDA_VISIBLE_DEVICES=${gpu_list[0]} "$py" recover/recover.py --config ${config} \
      --teacher "${TEACHER}" --output-dir "${OUT}" --exp-name "${EXP}" --ipc "${IPC}" \
      --class-start "${CLASS_START}" --class-end "${CLASS_END}" "$@"
    return
  fi
  local pids=() status=0 i start end
  for i in "${!gpu_list[@]}"; do
    start=$(( CLASS_START + total * i / n ))
    end=$(( CLASS_START + total * (i + 1) / n ))
    echo "GPU ${gpu_list[$i]}: classes [${start}, ${end}) -> ${OUT}/${EXP}.gpu${i}.log"
    CUDA_VISIBLE_DEVICES=${gpu_list[$i]} "$py" recover/recover.py --config ${config} \
      --teacher "${TEACHER}" --output-dir "${OUT}" --exp-name "${EXP}" --ipc "${IPC}" \
      --class-start "${start}" --class-end "${end}" --no-progress "$@" > "${OUT}/${EXP}.gpu${i}.log" 2>&1 &
    pids+=($!)
  done
  for i in "${!pids[@]}"; do
    if ! wait "${pids[$i]}"; then
      echo "GPU ${gpu_list[$i]} failed: see ${OUT}/${EXP}.gpu${i}.log" >&2
      status=1
    fi
  done
  return $status
}
