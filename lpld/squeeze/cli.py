"""Command-line entry points of the squeeze stage: ``lpld squeeze-train`` and ``lpld class-stats``
(``squeeze/train.py``, ``squeeze/class_stats.py``)."""
from __future__ import annotations

from typing import Sequence

from ..config import parse_config
from .class_stats import run_class_stats
from .schema import CLASS_STATS_SCHEMA, TRAIN_SCHEMA
from .train import run_teacher_training


def main_train(argv: Sequence[str] | None = None) -> dict:
    return run_teacher_training(parse_config(TRAIN_SCHEMA, argv, sections=("common", "squeeze"),
                                             description="Train a teacher (stage 1)."))


def main_class_stats(argv: Sequence[str] | None = None):
    return run_class_stats(parse_config(CLASS_STATS_SCHEMA, argv, sections=("common", "squeeze"),
                                        description="Record class-wise BN statistics (stage 1)."))
