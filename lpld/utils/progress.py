"""Progress reporting that suits a terminal and a log file alike.

On a terminal, :func:`progress_bar` is ``tqdm``. When the stream is not a terminal (a log file, a
pipe, a job scheduler's output), tqdm would still write a carriage-return frame at every refresh,
thousands of them per log; :class:`LineProgress` takes its place with the same interface and
prints whole lines instead: one when the loop ends (unless ``leave=False``) and, in long loops, one
at each tenth of the total (``every``), labelled with it: ``relabel: 30% 300/1000 batch [...]``.
"""
from __future__ import annotations

import math
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
    ``set_description``, ``close``, context manager), printing one line per report.

    Reports fall on the multiples of ``every`` of the total (10%, 20%, ... 90%; the end is the
    closing line): one line for each one reached, also when a single ``update`` passes several
    (a line each) and when the total is under 10 items; those already passed at ``initial`` (a
    resumed loop) are not repeated. Only long loops report: the loop's duration, projected when it
    reaches its first report, must be at least ``min_duration`` seconds; shorter ones print only
    their closing line.
    """

    def __init__(self, iterable: Iterable | None = None, desc: str | None = None, total: float | None = None,
                 *, disable: bool = False, file: IO | None = None, initial: float = 0, unit: str = "it",
                 leave: bool = True, every: float = 0.1, min_duration: float = 60.0, **_tqdm_only) -> None:
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
        self.n = self.initial = initial
        if not 0 < every <= 1:
            raise ValueError(f"progress: every must lie in (0, 1]; got {every}")
        self.every, self.min_duration = every, min_duration
        self.postfix = ""
        self.start = time.monotonic()
        self.reported = self._reached()  # reports already passed (a resumed loop)
        self.long: bool | None = None  # decided at the first report
        self.closed = False

    def _reached(self) -> int:
        """How many multiples of ``every`` of the total ``n`` has reached, the end excluded."""
        if not self.total or self.total <= 0:
            return 0
        # the small tolerance keeps 30/100 at the third tenth although 0.3 / 0.1 < 3 in floats
        reached = math.floor(min(self.n / self.total, 1.0) / self.every + 1e-9)
        return min(reached, math.ceil(1 / self.every - 1e-9) - 1)

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
        reached = self._reached()
        if reached <= self.reported:
            return
        if self.long is None:
            # the whole loop at the pace so far (of this run: a resumed loop starts at `initial`)
            projected = (time.monotonic() - self.start) * (self.total - self.initial) / (self.n - self.initial)
            self.long = projected >= self.min_duration
        for k in range(self.reported + 1, reached + 1):
            self.reported = k
            if self.long:
                self._print(mark=f"{round(100 * k * self.every, 2):g}% ")

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

    def _print(self, mark: str = "") -> None:
        if self.disable:
            return
        elapsed = time.monotonic() - self.start
        done = f"{self.n:g}/{self.total:g}" if self.total else f"{self.n:g}"
        ran = self.n - self.initial
        rate = f", {ran / elapsed:.2f} {self.unit}/s" if elapsed > 0 and ran else ""
        postfix = f" {self.postfix}" if self.postfix else ""
        head = f"{self.desc}: " if self.desc else ""
        print(f"{head}{mark}{done} {self.unit} [{tqdm.format_interval(elapsed)}{rate}]{postfix}",
              file=self.file if self.file is not None else sys.stderr, flush=True)


def progress_bar(iterable: Iterable | None = None, desc: str | None = None, total: float | None = None, *,
             disable: bool = False, file: IO | None = None, **kwargs):
    """``tqdm(iterable, desc, total, ...)`` on a terminal, :class:`LineProgress` otherwise (the stream
    is ``file``, stderr by default, as tqdm's)."""
    stream = file if file is not None else sys.stderr
    if is_terminal(stream):
        kwargs.pop("every", None), kwargs.pop("min_duration", None)
        return tqdm(iterable, desc=desc, total=total, disable=disable, file=file, **kwargs)
    return LineProgress(iterable, desc=desc, total=total, disable=disable, file=file, **kwargs)
