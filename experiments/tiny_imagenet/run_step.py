#!/usr/bin/env python
"""Run one pipeline step, timed, and record what ran: the provenance collect_results.py reads.

    python experiments/tiny_imagenet/run_step.py RUN_DIR [KEY=VALUE ...] -- COMMAND [ARG ...]

Writes ``RUN_DIR/step[_<step>].log`` (the command's stdout and stderr, also echoed) and
``RUN_DIR/run_info.json`` (``run_info_<step>.json`` with a ``step=NAME`` pair, so relabel and
validate of one run keep separate records): the KEY=VALUE pairs (numbers parsed; e.g. ``method=lpld ipc=50
prune_ratio=0.975 step=validate``), ``command``, ``exit_code``, ``wall_time_s``, ``started_utc``,
``device`` (GPU name from torch, else "cpu: <processor>") and, for a ``label_dir=PATH`` pair, that
folder's size on disk as ``label_bytes``. Exits with the command's exit status.
"""
from __future__ import annotations

import datetime
import json
import os
import platform
import shlex
import subprocess
import sys
import time


def _value(text: str):
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def folder_bytes(path: str) -> int:
    """Bytes of all regular files under ``path`` (a file: its size)."""
    if os.path.isfile(path):
        return os.path.getsize(path)
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            p = os.path.join(root, name)
            if os.path.isfile(p) and not os.path.islink(p):
                total += os.path.getsize(p)
    return total


def device_name() -> str:
    try:
        import torch
        if torch.cuda.is_available():
            return torch.cuda.get_device_name(0)
    except Exception:  # noqa: BLE001 - provenance only
        pass
    return f"cpu: {platform.processor() or platform.machine()} x{os.cpu_count()}"


def parse_args(argv: list[str]):
    if "--" not in argv or argv.index("--") < 1 or argv.index("--") == len(argv) - 1:
        raise SystemExit(__doc__)
    split = argv.index("--")
    run_dir, pairs, command = argv[0], argv[1:split], argv[split + 1:]
    meta = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise SystemExit(f"run_step.py: expected KEY=VALUE before '--'; got {pair!r}")
        meta[key] = _value(value)
    return run_dir, meta, command


def main(argv: list[str] | None = None) -> int:
    run_dir, meta, command = parse_args(sys.argv[1:] if argv is None else argv)
    os.makedirs(run_dir, exist_ok=True)
    started = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    t0 = time.time()
    step = meta.get("step")
    suffix = f"_{step}" if step else ""
    with open(os.path.join(run_dir, f"step{suffix}.log"), "a") as log:
        log.write(f"$ {shlex.join(command)}\n")
        log.flush()
        proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1)
        for line in proc.stdout:
            sys.stdout.write(line)
            log.write(line)
        rc = proc.wait()
    info = {**meta, "command": shlex.join(command), "exit_code": rc, "wall_time_s": round(time.time() - t0, 1),
            "started_utc": started, "device": device_name()}
    if isinstance(meta.get("label_dir"), str) and os.path.exists(meta["label_dir"]):
        info["label_bytes"] = folder_bytes(meta["label_dir"])
    tmp = os.path.join(run_dir, f".run_info{suffix}.json.tmp")
    with open(tmp, "w") as f:
        json.dump(info, f, indent=2, sort_keys=True)
        f.write("\n")
    os.replace(tmp, os.path.join(run_dir, f"run_info{suffix}.json"))
    return rc


if __name__ == "__main__":
    sys.exit(main())
