"""Progress reporting that suits a terminal and a log file alike.

On a terminal, :func:`progress_bar` is ``tqdm``. When the stream is not a terminal (a log file, a
pipe, a job scheduler's output), tqdm would still write a carriage-return frame at every refresh,
thousands of them per log; :class:`LineProgress` takes its place with the same interface and
prints whole lines instead: one when the loop ends (unless ``leave=False``), plus one each time another ``every`` of the
total is done if at least ``min_interval`` seconds passed since the last line (long loops only).
"""
from __future__ import annotations

import sys
import time
from typing import IO, Iterable, Iterator

from tqdm import tqdm

__all__ = ["LineProgress", "is_terminal", "progress_bar", "write"]


def is_terminal(stream: IO | None) -> bool:
    isatty = getattr(stream, "isatty", None)
    try:
        return bool(isatty and isatty())
    except ValueError:  # a closed stream
        return False


def write(message: str, file: IO | None = None) -> None:
    """Print a line without breaking a bar in progress (``tqdm.write``)."""
    tqdm.write(message, file=file)


class LineProgress:
    """The part of tqdm's interface the stages use (iteration, ``update``, ``set_postfix``,
    ``set_description``, ``close``, context manager), printing one line per report."""

    def __init__(self, iterable: Iterable | None = None, desc: str | None = None, total: float | None = None,
                 *, disable: bool = False, file: IO | None = None, initial: float = 0, unit: str = "it",
                 leave: bool = True, every: float = 0.1, min_interval: float = 60.0, **_tqdm_only) -> None:
        if total is None and iterable is not None:
            try:
                total = len(iterable)  # type: ignore[arg-type]
            except TypeError:
                total = None
        self.iterable, self.desc, self.total, self.unit = iterable, desc or "", total, unit
        self.disable, self.file = disable, file
        # leave=False (as tqdm's: the bar vanishes when done): no closing line, the caller prints its
        # own summary (a student's epoch line, for one)
        self.leave = leave
        self.n = initial
        self.every, self.min_interval = every, min_interval
        self.postfix = ""
        self.start = self.last_line = time.monotonic()
        self.next_report = self._fraction_step()
        self.closed = False

    def _fraction_step(self) -> float:
        return self.n + self.total * self.every if self.total else float("inf")

    def __len__(self) -> int:
        return int(self.total or 0)

    def __iter__(self) -> Iterator:
        try:
            for item in self.iterable:
                yield item
                self.update(1)
        finally:
            self.close()

    def __enter__(self) -> "LineProgress":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def update(self, n: float = 1) -> None:
        self.n += n
        if self.n >= self.next_report:
            self.next_report = self._fraction_step()
            if time.monotonic() - self.last_line >= self.min_interval and not (self.total and self.n >= self.total):
                self._print()

    def set_postfix(self, ordered_dict=None, refresh: bool = True, **kwargs) -> None:
        items = dict(ordered_dict or {}, **kwargs)
        self.postfix = ", ".join(f"{k}={v}" for k, v in items.items())

    def set_description(self, desc: str | None = None, refresh: bool = True) -> None:
        self.desc = desc or ""

    def refresh(self) -> None:
        """Nothing to redraw: lines are printed at reports."""

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            if self.leave:
                self._print()

    def _print(self) -> None:
        if self.disable:
            return
        now = time.monotonic()
        self.last_line = now
        elapsed = now - self.start
        done = f"{self.n:g}/{self.total:g}" if self.total else f"{self.n:g}"
        rate = f", {self.n / elapsed:.2f} {self.unit}/s" if elapsed > 0 and self.n else ""
        postfix = f" {self.postfix}" if self.postfix else ""
        head = f"{self.desc}: " if self.desc else ""
        print(f"{head}{done} {self.unit} [{tqdm.format_interval(elapsed)}{rate}]{postfix}",
              file=self.file if self.file is not None else sys.stderr, flush=True)


def progress_bar(iterable: Iterable | None = None, desc: str | None = None, total: float | None = None, *,
             disable: bool = False, file: IO | None = None, **kwargs):
    """``tqdm(iterable, desc, total, ...)`` on a terminal, :class:`LineProgress` otherwise (the stream
    is ``file``, stderr by default, as tqdm's)."""
    stream = file if file is not None else sys.stderr
    if is_terminal(stream):
        kwargs.pop("every", None), kwargs.pop("min_interval", None)
        return tqdm(iterable, desc=desc, total=total, disable=disable, file=file, **kwargs)
    return LineProgress(iterable, desc=desc, total=total, disable=disable, file=file, **kwargs)
