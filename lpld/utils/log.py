"""One logger for every stage, and one "main process" gate.

``log = get_logger(__name__)`` in a module, then

* ``log.info(message)``: a progress or result line, on stdout, as it is;
* ``log.warning(message)``: on stderr, as ``warning: <message>``;
* ``log.error(message)``: on stderr, as it is (a command's one-line error names the command).

Under DDP only the main process (rank 0, :func:`lpld.utils.runtime.is_main_process`) writes info
and warning lines, so a line appears once however many processes run; errors come from every rank.
The stream is looked up as each line is written, so a redirected ``sys.stdout`` / ``sys.stderr``
(a test's capture, ``contextlib.redirect_stdout``) receives the lines. The records do not
propagate to the root logger: configuring logging elsewhere never prints a line twice.

Progress bars and their line-per-report fallback (:mod:`lpld.utils.progress`) write to their own
stream, as tqdm does.
"""
from __future__ import annotations

import logging
import sys

from .runtime import is_main_process

ROOT = "lpld"


class _Format(logging.Formatter):
    """The message itself; a warning says so first."""

    def format(self, record: logging.LogRecord) -> str:
        text = record.getMessage()
        return f"warning: {text}" if record.levelno == logging.WARNING else text


class _MainProcess(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.ERROR or is_main_process()


class _Streams(logging.Handler):
    """Info to stdout, warnings and errors to stderr: the streams of the moment."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            stream = sys.stderr if record.levelno >= logging.WARNING else sys.stdout
            stream.write(self.format(record) + "\n")
            stream.flush()
        except Exception:  # noqa: BLE001 - logging's own policy: report, never raise
            self.handleError(record)


def _setup() -> logging.Logger:
    logger = logging.getLogger(ROOT)
    if not any(isinstance(h, _Streams) for h in logger.handlers):
        handler = _Streams()
        handler.setFormatter(_Format())
        handler.addFilter(_MainProcess())
        logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    return logger


_setup()


def get_logger(name: str) -> logging.Logger:
    """The logger of module ``name`` (``lpld.<...>``: every one writes through lpld's handler)."""
    return logging.getLogger(name if name == ROOT or name.startswith(ROOT + ".") else f"{ROOT}.{name}")
