"""Command-line entry point of student training: ``lpld validate`` (``relabel_and_validate/validate.py``,
also under torchrun)."""
from __future__ import annotations

import json
from typing import Any, Sequence

from ..config import parse_config
from ..utils.runtime import is_main_process
from .schema import VALIDATE_SCHEMA
from .train import run_validate


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    result = run_validate(parse_config(VALIDATE_SCHEMA, argv, sections=("common", "validate"),
                                       description="Train and evaluate a student on distilled images and "
                                                   "stored soft labels (stage 3b)."))
    if is_main_process():
        print(json.dumps(result, indent=2))  # the command's output: the final metrics
    return result
