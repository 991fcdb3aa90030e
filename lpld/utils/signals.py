"""SIGTERM handled like Ctrl-C.

Cluster schedulers (SLURM, Kubernetes) stop a job with SIGTERM and follow with SIGKILL after a grace
period. By default SIGTERM kills Python on the spot: the label batches computed since the last
commit are lost and DataLoader workers are left to notice their parent's death. Inside
:func:`terminate_like_interrupt` SIGTERM raises :class:`Terminated` (a ``KeyboardInterrupt``), so
the stages' ``finally`` blocks commit what is complete, the DataLoader shuts its workers down, and
the command line exits non-zero with a resume hint. Further SIGTERMs during that cleanup are
ignored, so the cleanup is not cut short by a repeated signal.
"""
from __future__ import annotations

import contextlib
import signal
import threading
from typing import Iterator


class Terminated(KeyboardInterrupt):
    """Raised in the main thread when the process receives SIGTERM."""

    def __init__(self, signum: int = signal.SIGTERM) -> None:
        super().__init__(f"received {signal.Signals(signum).name}")
        self.signum = signum


_received: int | None = None


def received() -> int | None:
    """The terminating signal received inside :func:`terminate_like_interrupt`, if any."""
    return _received


def exit_status(signum: int | None) -> int:
    """The shell's status for a process ended by ``signum`` (143 for SIGTERM, 130 for SIGINT)."""
    return 128 + int(signum or signal.SIGINT)


@contextlib.contextmanager
def terminate_like_interrupt() -> Iterator[None]:
    """Within the block, SIGTERM raises :class:`Terminated` once (main thread only; a no-op elsewhere)."""
    global _received
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    previous_hook = threading.excepthook

    def handler(signum, frame):
        global _received
        if _received is not None:
            return  # already stopping: let the cleanup finish
        _received = signum
        threading.excepthook = _quiet_broken_handoffs(previous_hook)
        raise Terminated(signum)

    previous = signal.signal(signal.SIGTERM, handler)
    _received = None
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
        threading.excepthook = previous_hook


def _quiet_broken_handoffs(hook):
    """A scheduler signals the whole job, so DataLoader workers may die while handing the parent a
    shared tensor's file descriptor; multiprocessing's resource-sharer thread then meets a broken
    pipe and prints its traceback. That is the stop in progress, not an error: keep it out of the log."""
    def excepthook(args):
        tb = args.exc_traceback
        in_sharer = tb is not None and tb.tb_frame.f_code.co_filename.endswith("resource_sharer.py")
        if in_sharer and issubclass(args.exc_type, (BrokenPipeError, ConnectionResetError, EOFError)):
            return
        hook(args)
    return excepthook
