#!/usr/bin/env python
"""Record class-wise BN statistics: python squeeze/class_stats.py --config squeeze/configs/tiny.yaml
--data-path DIR --weights teacher.pth [--output resnet18_tiny_0.pth]"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from lpld.cli import run_command  # noqa: E402

if __name__ == "__main__":
    run_command("class-stats")
