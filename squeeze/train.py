#!/usr/bin/env python
"""Train a teacher: python squeeze/train.py --config squeeze/configs/tiny.yaml --data-path DIR"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from lpld.cli import run_command  # noqa: E402

if __name__ == "__main__":
    run_command("squeeze-train")
