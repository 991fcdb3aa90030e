#!/usr/bin/env python
"""Replay check: python relabel_and_validate/check_labels.py --store OUT --train-dir DIR --teacher-ckpt FILE
Exit status 0 when the stored logits match the teacher on the replayed batches, 1 otherwise."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from lpld.cli import run_command  # noqa: E402

if __name__ == "__main__":
    sys.exit(run_command("check-labels"))
