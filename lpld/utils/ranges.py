"""Contiguous shares of an index range: how sharded stages split their work (classes, batches)."""
from __future__ import annotations

from .errors import InputValueError


def split_range(start: int, end: int, index: int, count: int, align: int = 1) -> tuple[int, int]:
    """The ``index``-th of ``count`` contiguous, near-equal parts of ``[start, end)``; inner
    boundaries are rounded to multiples of ``align`` (a part may then be empty)."""
    if not 0 <= index < count:
        raise InputValueError(f"shard {index} of {count} does not exist: need 0 <= index < count")

    def cut(k: int) -> int:
        if k in (0, count):
            return start if k == 0 else end
        b = start + (end - start) * k // count
        return min(end, max(start, (b + align // 2) // align * align))
    return cut(index), cut(index + 1)
