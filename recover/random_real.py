#!/usr/bin/env python
"""A random real subset in the recovered-image layout: python recover/random_real.py
--config recover/configs/random_real_tiny.yaml --data-path /data/tiny-imagenet-200 [--ipc 50 --seed 0]"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from lpld.cli import run_command  # noqa: E402

if __name__ == "__main__":
    run_command("random-real")
