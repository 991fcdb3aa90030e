"""What every module of the suite shares: where things are, the names of the document, and what a
value in it may be (a finite number, or a string that says why there is none)."""
from __future__ import annotations

import contextlib
import datetime
import math
import os

import torch

BENCHMARKS = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REPO = os.path.dirname(BENCHMARKS)
ENTRY = os.path.join(BENCHMARKS, "gpu_suite.py")  # the command the JSON records, however main() was reached

SCHEMA = "lpld-gpu-suite/1"
SECTIONS = ("tests", "stages", "speed")  # the order of the JSON's "sections"
DEFAULT_ORDER = ("tests", "speed", "stages")  # the order they run in without --only (see the package docstring)

NOT_MEASURED = "not measured"
BUDGET = "not run: time budget"
NOT_REACHED = "not run: the run ended before this measurement"
NA_CPU = "n/a (cpu)"
MIB = 2 ** 20


def now_iso() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def mib(nbytes) -> float | str:
    return nbytes / MIB if nbytes is not None else NA_CPU


def unmeasured(fields, why: str) -> dict:
    """The numbers of a row that holds none, each saying why (a ratio over one then says it too)."""
    return {f: f"{NOT_MEASURED}: {why}" for f in fields}


def clean(value):
    """JSON-ready copy: numpy/torch scalars as Python numbers, a non-finite float as an explicit string."""
    if isinstance(value, dict):
        return {str(k): clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [clean(v) for v in value]
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        value = value.item()
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        with contextlib.suppress(Exception):  # not a scalar after all: kept as it is
            value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return f"not finite: {value}"
    return value


def reset_compiler() -> None:
    """Forget every compiled graph: each measurement then compiles its own static graph, as a fresh
    process does (dynamo would otherwise reuse, or make dynamic, graphs of an earlier shape)."""
    torch._dynamo.reset()
