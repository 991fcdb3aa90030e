#!/usr/bin/env python
"""Recover distilled images: python recover/recover.py --config recover/configs/imagenet1k.yaml
--teacher resnet18_0.pth [--ipc 50 --class-start 0 --class-end 1000 --groups-per-step 10 --amp]"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from lpld.config import parse_config  # noqa: E402
from lpld.recover import RECOVER_SCHEMA, run_recovery  # noqa: E402

if __name__ == "__main__":
    print(run_recovery(parse_config(RECOVER_SCHEMA, sections=("common", "recover"), description=__doc__)))
