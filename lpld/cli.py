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

from .config import ConfigError, command_name
from .utils import signals
from .utils.errors import FetcherPatchError, LpldInputError
from .utils.io import is_disk_full
from .utils.log import get_logger

log = get_logger(__name__)

# name -> (module, function, help). Functions take argv; each stage keeps its own command-line entry
# point, imported only when its command runs (``lpld --help`` loads no stage).
COMMANDS: dict[str, tuple[str, str, str]] = {
    "demo": ("lpld.pipeline", "main", "the whole pipeline (defaults: the built-in demo dataset)"),
    "pipeline": ("lpld.pipeline", "main", "the whole pipeline from a config (configs/pipeline/*.yaml)"),
    "report": ("lpld.report", "main", "results of finished runs: mean ± std over seeds, table and plot"),
    "make-demo": ("lpld.data.demo", "main", "generate the built-in demo dataset into a folder"),
    "squeeze-train": ("lpld.squeeze.cli", "main_train", "stage 1: train a teacher"),
    "class-stats": ("lpld.squeeze.cli", "main_class_stats", "stage 1: record class-wise BN statistics"),
    "recover": ("lpld.recover.cli", "main", "stage 2: synthesise distilled images"),
    "rded": ("lpld.recover.rded", "main", "stage 2, RDED: teacher-scored patches of real images, stitched"),
    "random-real": ("lpld.recover.random_real", "main", "stage 2, control: a seeded random real subset per class"),
    "relabel": ("lpld.relabel.cli", "main_relabel", "stage 3a: generate soft labels"),
    "check-labels": ("lpld.relabel.cli", "main_check", "replay check of a label store"),
    "convert-labels": ("lpld.relabel.cli", "main_convert", "convert a label store (ours, the authors' LPLD or LPQLD folders)"),
    "validate": ("lpld.validate.cli", "main", "stage 3b: train and evaluate a student"),
    "launch": ("lpld.launch.cli", "main", "every stage as cluster jobs: SLURM via submitit, or local (docs/cluster.md)"),
    "diversity": ("lpld.analysis.diversity", "main", "within-class diversity of image sets"),
    "plot": ("lpld.analysis.plot", "main", "accuracy vs label compression plot"),
}


def user_errors() -> tuple[type[BaseException], ...]:
    """What the command line reports in one line: our input errors, and the OS errors that are
    about a path the user gave (they name it)."""
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
                log.error(f"{name}: interrupted by {what}. Completed work is saved; rerun the same command to resume.")
                sys.exit(signals.exit_status(signum))
            if os.environ.get("LPLD_DEBUG") or not (isinstance(err, user_errors()) or is_disk_full(err)):
                raise
            log.error(f"{name}: error: {_one_line(err)}")
            sys.exit(2)


def run_command(name: str, argv: Sequence[str] | None = None) -> Any:
    module, function, _ = COMMANDS[name]
    fn = getattr(importlib.import_module(module), function)
    return run_friendly(name, fn, list(sys.argv[1:] if argv is None else argv))


def main(argv: Sequence[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMANDS:
        width = max(map(len, COMMANDS))
        lines = [f"  {n:<{width}}  {h}" for n, (_, _, h) in COMMANDS.items()]
        print("usage: lpld <command> [options]   (lpld <command> --help)\n\ncommands:\n" + "\n".join(lines))  # the help
        if argv and argv[0] not in ("-h", "--help"):
            sys.exit(f"lpld: unknown command {argv[0]!r}")
        return
    result = run_command(argv[0], argv[1:])
    if isinstance(result, int) and argv[0] in ("check-labels", "diversity", "plot"):
        sys.exit(result)


if __name__ == "__main__":
    main()
