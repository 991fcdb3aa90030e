"""One command for every stage: ``lpld <command> [options]`` (``lpld <command> --help``).

The stage folders' scripts (``squeeze/train.py``, ``recover/recover.py``, ...) call the same
functions, so ``lpld recover ...`` and ``python recover/recover.py ...`` are interchangeable.

Errors caused by the input -- our own :class:`~lpld.utils.errors.LpldInputError` (a mismatched
label store, a damaged store, a locked output, a missing GPU, bad images ...), a config error, a
missing or unwritable path, a full disk -- end the program with one line naming the problem
(status 2); anything else is a bug and keeps its traceback. ``LPLD_DEBUG=1`` shows the traceback of
every error. SIGTERM is handled like Ctrl-C: the stage keeps what is complete and the program
exits with 143 (130 for Ctrl-C) and a resume hint.
"""
from __future__ import annotations

import importlib
import os
import sys
from typing import Any, Callable, Sequence

from .config import ConfigError, command_name, parse_config
from .utils import signals
from .utils.errors import LpldInputError
from .utils.io import is_disk_full

# name -> (module, function, help). Functions take argv.
COMMANDS: dict[str, tuple[str, str, str]] = {
    "demo": ("lpld.pipeline", "main", "the whole pipeline (defaults: the built-in demo dataset)"),
    "pipeline": ("lpld.pipeline", "main", "the whole pipeline from a config (configs/pipeline/*.yaml)"),
    "report": ("lpld.report", "main", "results of finished runs: mean ± std over seeds, table and plot"),
    "make-demo": ("lpld.cli", "make_demo", "generate the built-in demo dataset into a folder"),
    "squeeze-train": ("lpld.cli", "squeeze_train", "stage 1: train a teacher"),
    "class-stats": ("lpld.cli", "class_stats", "stage 1: record class-wise BN statistics"),
    "recover": ("lpld.cli", "recover", "stage 2: synthesise distilled images"),
    "rded": ("lpld.recover.rded", "main", "stage 2, RDED: teacher-scored patches of real images, stitched"),
    "random-real": ("lpld.recover.random_real", "main", "stage 2, control: a seeded random real subset per class"),
    "relabel": ("lpld.relabel.cli", "main_relabel", "stage 3a: generate soft labels"),
    "check-labels": ("lpld.relabel.cli", "main_check", "replay check of a label store"),
    "convert-labels": ("lpld.relabel.cli", "main_convert", "convert a label store (ours, the authors' LPLD or LPQLD folders)"),
    "validate": ("lpld.cli", "validate", "stage 3b: train and evaluate a student"),
    "launch": ("lpld.launch.cli", "main", "every stage as cluster jobs: SLURM via submitit, or local (docs/cluster.md)"),
    "diversity": ("lpld.analysis.diversity", "main", "within-class diversity of image sets"),
    "plot": ("lpld.analysis.plot", "main", "accuracy vs label compression plot"),
}


def user_errors() -> tuple[type[BaseException], ...]:
    """What the command line reports in one line: our input errors, and the OS errors that are
    about a path the user gave (they name it)."""
    from .validate.fetcher_patch import FetcherPatchError
    return (LpldInputError, ConfigError, FetcherPatchError, FileNotFoundError, FileExistsError, PermissionError,
            NotADirectoryError, IsADirectoryError)


def _one_line(err: BaseException) -> str:
    if is_disk_full(err) and not isinstance(err, LpldInputError):
        where = f" while writing {err.filename}" if getattr(err, "filename", None) else ""
        return (f"the disk is full{where} ({err.strerror}). Completed work is kept; free some space and rerun "
                f"the same command to continue.")
    return str(err)


def run_friendly(name: str, fn: Callable[..., Any], *args: Any) -> Any:
    """Run ``fn`` with SIGTERM handled like Ctrl-C; an input error exits with
    ``<name>: error: <message>`` (status 2), an interruption with a resume hint (143 / 130)."""
    with signals.terminate_like_interrupt(), command_name(name):
        try:
            return fn(*args)
        except BaseException as err:
            if isinstance(err, SystemExit):
                raise
            signum = signals.received()
            if isinstance(err, KeyboardInterrupt) or signum is not None:
                what = "SIGTERM" if signum is not None else "Ctrl-C"
                print(f"{name}: interrupted by {what}. Completed work is saved; rerun the same command to resume.",
                      file=sys.stderr, flush=True)
                sys.exit(signals.exit_status(signum))
            if os.environ.get("LPLD_DEBUG") or not (isinstance(err, user_errors()) or is_disk_full(err)):
                raise
            print(f"{name}: error: {_one_line(err)}", file=sys.stderr, flush=True)
            sys.exit(2)


def make_demo(argv: Sequence[str] | None = None) -> str:
    from .config import ArgumentParser, argument_type
    from .data import DEMO_DEFAULTS, DEMO_RANGES, make_demo_dataset
    p = ArgumentParser(description="Generate the built-in demo dataset (train/ and val/ image folders).")
    p.add_argument("path", help="folder to create (for lpld stages: --dataset demo --data-path PATH)")
    for key, value in DEMO_DEFAULTS.items():
        p.add_argument("--" + key.replace("_", "-"), type=argument_type(DEMO_RANGES[key]), default=value)
    args = vars(p.parse_args(argv))
    path = make_demo_dataset(args.pop("path"), **args)
    print(path)
    return path


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
