"""Command-line entry points of the squeeze stage: ``lpld squeeze-train`` and ``lpld class-stats``
(``squeeze/train.py``, ``squeeze/class_stats.py``)."""
from __future__ import annotations

import argparse
from typing import Sequence

from ..config import add_schema_arguments, parse_config
from .class_stats import run_class_stats
from .schema import CLASS_STATS_SCHEMA, TRAIN_SCHEMA
from .train import run_teacher_training

# The options training and the class pass read with one meaning: the model (model, tiny_stem,
# num_classes), the data (dataset, data_path, image_size), the loader, the device and the seed. Not
# --amp: the class pass has its own (opt-in bf16, as it moves the statistics).
SHARED_OPTIONS = tuple(name for name, opt in CLASS_STATS_SCHEMA.items() if TRAIN_SCHEMA.get(name) is opt)


def main_train(argv: Sequence[str] | None = None) -> dict:
    return run_teacher_training(parse_config(TRAIN_SCHEMA, argv, sections=("common", "squeeze"),
                                             description="Train a teacher (stage 1)."))


def main_class_stats(argv: Sequence[str] | None = None):
    return run_class_stats(parse_config(CLASS_STATS_SCHEMA, argv, sections=("common", "squeeze"),
                                        description="Record class-wise BN statistics (stage 1)."))


def class_stats_flags(train_argv: Sequence[str]) -> list[str]:
    """The flags of a ``squeeze-train`` command line that ``class-stats`` must get too
    (:data:`SHARED_OPTIONS`, given on the command line), spelled ``--flag value`` and
    ``--flag`` / ``--no-flag``. Read as training reads them (abbreviations, ``--flag=value``, the
    last one wins); ``--config`` and training's own options (``--epochs`` ...) are left out.
    ``squeeze/scripts/tiny.sh`` gives these to the class pass, so that it builds the model training
    built (``--model resnet50`` reads back a ResNet-50 teacher)."""
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--config", nargs="*", default=[])
    add_schema_arguments(parser, TRAIN_SCHEMA)
    given, _ = parser.parse_known_args(list(train_argv))
    flags: list[str] = []
    for name in SHARED_OPTIONS:
        value = getattr(given, name)
        if value is None:
            continue
        flag = name.replace("_", "-")
        if isinstance(value, bool):
            flags.append(f"--{flag}" if value else f"--no-{flag}")
        else:
            flags += [f"--{flag}", str(value)]
    return flags
