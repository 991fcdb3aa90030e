#!/usr/bin/env python
"""Train a teacher: python squeeze/train.py --config squeeze/configs/tiny.yaml --data-path DIR"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from lpld.config import parse_config  # noqa: E402
from lpld.squeeze import TRAIN_SCHEMA, run_teacher_training  # noqa: E402

if __name__ == "__main__":
    run_teacher_training(parse_config(TRAIN_SCHEMA, sections=("common", "squeeze"), description=__doc__))
