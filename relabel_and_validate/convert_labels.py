#!/usr/bin/env python
"""Convert soft labels: python relabel_and_validate/convert_labels.py --src DIR --dst DIR --to ours|authors"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from lpld.cli import run_command  # noqa: E402

if __name__ == "__main__":
    run_command("convert-labels")
