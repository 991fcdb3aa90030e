#!/usr/bin/env python
"""Recover distilled images: python recover/recover.py --config recover/configs/imagenet1k.yaml
--teacher resnet18_0.pth [--ipc 50 --class-start 0 --class-end 1000 --groups-per-step 10 --amp]"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from lpld.cli import run_command  # noqa: E402

if __name__ == "__main__":
    run_command("recover")
