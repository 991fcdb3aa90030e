"""Command-line entry point of the recovery: ``lpld recover`` (``recover/recover.py``)."""
from __future__ import annotations

from typing import Sequence

from ..config import parse_config
from .run import run_recovery
from .schema import RECOVER_SCHEMA


def main(argv: Sequence[str] | None = None) -> str:
    out = run_recovery(parse_config(RECOVER_SCHEMA, argv, sections=("common", "recover"),
                                    description="Synthesise distilled images (stage 2)."))
    print(out)  # the command's output: the image folder
    return out
