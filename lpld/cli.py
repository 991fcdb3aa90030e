"""One command for every stage: ``lpld <command> [options]`` (``lpld <command> --help``).

The stage folders' scripts (``squeeze/train.py``, ``recover/recover.py``, ...) call the same
functions, so ``lpld recover ...`` and ``python recover/recover.py ...`` are interchangeable.
Errors caused by the input (a bad path, config key or value, a mismatched label store) end the
program with one line naming the problem; set ``LPLD_DEBUG=1`` to see the traceback instead.
"""
from __future__ import annotations

import importlib
import os
import sys
from typing import Any, Callable, Sequence

from .config import ConfigError, parse_config

# name -> (module, function, help). Functions take argv.
COMMANDS: dict[str, tuple[str, str, str]] = {
    "demo": ("lpld.pipeline", "main", "the whole pipeline (defaults: the built-in demo dataset)"),
    "squeeze-train": ("lpld.cli", "squeeze_train", "stage 1: train a teacher"),
    "class-stats": ("lpld.cli", "class_stats", "stage 1: record class-wise BN statistics"),
    "recover": ("lpld.cli", "recover", "stage 2: synthesise distilled images"),
    "rded": ("lpld.recover.rded", "main", "stage 2, RDED: teacher-scored patches of real images, stitched"),
    "random-real": ("lpld.recover.random_real", "main", "stage 2, control: a seeded random real subset per class"),
    "relabel": ("lpld.relabel.cli", "main_relabel", "stage 3a: generate soft labels"),
    "check-labels": ("lpld.relabel.cli", "main_check", "replay check of a label store"),
    "convert-labels": ("lpld.relabel.cli", "main_convert", "convert a label store (ours <-> authors')"),
    "validate": ("lpld.cli", "validate", "stage 3b: train and evaluate a student"),
    "diversity": ("lpld.analysis.diversity", "main", "within-class diversity of image sets"),
    "plot": ("lpld.analysis.plot", "main", "accuracy vs label compression plot"),
}


def user_errors() -> tuple[type[BaseException], ...]:
    from .labels import StoreMismatchError
    from .validate.fetcher_patch import FetcherPatchError
    return (ConfigError, StoreMismatchError, FetcherPatchError, ValueError, FileNotFoundError,
            FileExistsError, PermissionError)


def run_friendly(name: str, fn: Callable[..., Any], *args: Any) -> Any:
    """Run ``fn``; an input error exits with ``<name>: error: <message>`` (status 2)."""
    if os.environ.get("LPLD_DEBUG"):
        return fn(*args)
    try:
        return fn(*args)
    except user_errors() as err:
        sys.exit(f"{name}: error: {err}")


def squeeze_train(argv: Sequence[str] | None = None):
    from .squeeze import TRAIN_SCHEMA, run_teacher_training
    return run_teacher_training(parse_config(TRAIN_SCHEMA, argv, sections=("common", "squeeze"),
                                             description="Train a teacher (stage 1)."))


def class_stats(argv: Sequence[str] | None = None):
    from .squeeze import CLASS_STATS_SCHEMA, run_class_stats
    return run_class_stats(parse_config(CLASS_STATS_SCHEMA, argv, sections=("common", "squeeze"),
                                        description="Record class-wise BN statistics (stage 1)."))


def recover(argv: Sequence[str] | None = None):
    from .recover import RECOVER_SCHEMA, run_recovery
    out = run_recovery(parse_config(RECOVER_SCHEMA, argv, sections=("common", "recover"),
                                    description="Synthesise distilled images (stage 2)."))
    print(out)
    return out


def validate(argv: Sequence[str] | None = None):
    import json
    from .validate import VALIDATE_SCHEMA, run_validate
    result = run_validate(parse_config(VALIDATE_SCHEMA, argv, sections=("common", "validate"),
                                       description="Train and evaluate a student on distilled images and "
                                                   "stored soft labels (stage 3b)."))
    if int(os.environ.get("RANK", "0")) == 0:
        print(json.dumps(result, indent=2))
    return result


def run_command(name: str, argv: Sequence[str] | None = None) -> Any:
    module, function, _ = COMMANDS[name]
    fn = getattr(importlib.import_module(module), function)
    return run_friendly(name, fn, list(sys.argv[1:] if argv is None else argv))


def main(argv: Sequence[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMANDS:
        width = max(map(len, COMMANDS))
        lines = [f"  {n:<{width}}  {h}" for n, (_, _, h) in COMMANDS.items()]
        print("usage: lpld <command> [options]   (lpld <command> --help)\n\ncommands:\n" + "\n".join(lines))
        if argv and argv[0] not in ("-h", "--help"):
            sys.exit(f"lpld: unknown command {argv[0]!r}")
        return
    result = run_command(argv[0], argv[1:])
    if isinstance(result, int) and argv[0] in ("check-labels", "diversity", "plot"):
        sys.exit(result)


if __name__ == "__main__":
    main()
