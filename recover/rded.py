#!/usr/bin/env python
"""RDED images from real training images: python recover/rded.py --config recover/configs/rded_tiny.yaml
--teacher resnet18_tiny.pth --data-path /data/tiny-imagenet-200 [--ipc 50 --class-start 0 --class-end 200]"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from lpld.cli import run_command  # noqa: E402

if __name__ == "__main__":
    run_command("rded")
