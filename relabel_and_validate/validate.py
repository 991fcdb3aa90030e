#!/usr/bin/env python
"""Train and evaluate a student on distilled images + stored (pruned) soft labels.

    python relabel_and_validate/validate.py --config relabel_and_validate/configs/tiny.yaml \
        --train-dir DISTILLED --label-dir LABELS --val-dir VAL --prune-ratio 0.975
    torchrun --nproc_per_node 4 relabel_and_validate/validate.py --config ... (DDP, one GPU per process)
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from lpld.cli import run_command  # noqa: E402

if __name__ == "__main__":
    run_command("validate")
