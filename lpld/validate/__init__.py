"""Validate stage: train students on distilled images + (pruned) stored soft labels.

Public API: :func:`run_validate` (config dict / namespace -> final metrics) and
:data:`VALIDATE_SCHEMA`; building blocks in :mod:`.pruning`, :mod:`.loader`,
:mod:`.fetcher_patch`, :mod:`.loss`, :mod:`.optim`, :mod:`.distributed`.
"""
from .schema import VALIDATE_SCHEMA  # noqa: F401
from .train import as_config, run_validate  # noqa: F401
