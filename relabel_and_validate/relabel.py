#!/usr/bin/env python
"""Generate FKD soft labels: python relabel_and_validate/relabel.py --config CFG.yaml --train-dir DIR
--teacher-ckpt FILE [--output-dir OUT] [--prune-ratio 0.5] [--format ours|authors]"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from lpld.cli import run_command  # noqa: E402

if __name__ == "__main__":
    run_command("relabel")
