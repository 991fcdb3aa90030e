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
import multiprocessing
import os
import signal
import sys
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

    quiet_broken_handoffs()  # before the stage forks its DataLoader workers, so they inherit it

    def handler(signum, frame):
        global _received
        if _received is not None:
            return  # already stopping: let the cleanup finish
        if _in_finalizer(frame):
            # Python prints and drops an exception raised in a finalizer, and the interrupted code
            # carries on: the stop would be lost. Deliver the signal again once the finalizer is done.
            retry = threading.Timer(0.05, os.kill, (os.getpid(), signum))
            retry.daemon = True
            retry.start()
            return
        _received = signum
        raise Terminated(signum)

    previous = signal.signal(signal.SIGTERM, handler)
    _received = None
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _in_finalizer(frame) -> bool:
    """Whether ``frame`` runs inside a finalizer: a ``__del__``, a ``weakref.finalize`` or one of
    multiprocessing's ``Finalize`` callbacks (a DataLoader iterator's queues close through these when
    it is collected, between two epochs for instance)."""
    while frame is not None:
        code = frame.f_code
        if code.co_name == "__del__":
            return True
        if code.co_name in ("__call__", "_run_finalizers") and (
                code.co_filename.endswith("weakref.py")
                or code.co_filename.endswith(os.path.join("multiprocessing", "util.py"))):
            return True
        frame = frame.f_back
    return False


def quiet_broken_handoffs(worker_id: int | None = None) -> None:
    """Keep a stop's broken shared-tensor handoffs out of the log (idempotent; usable as a DataLoader
    ``worker_init_fn`` so spawn/forkserver workers get it too).

    A DataLoader worker hands the parent each batch's shared memory through multiprocessing's
    resource-sharer thread, which reports any failure through ``sys.excepthook``. When the parent stops
    (SIGTERM, Ctrl-C) mid-handoff, the worker's thread meets a closed connection and prints a
    traceback that looks like a crash; it is the stop in progress. Only connection failures raised
    in that thread are silenced: the parent sees its own errors, so nothing real is hidden."""
    if getattr(sys.excepthook, "quiet_broken_handoffs", False):
        return
    previous = sys.excepthook
    # bound here, not looked up at call time: the worker may report while its interpreter shuts down
    broken = (OSError, EOFError, multiprocessing.AuthenticationError)

    def excepthook(exc_type, exc, tb):
        in_sharer = tb is not None and tb.tb_frame.f_code.co_filename.endswith("resource_sharer.py")
        if in_sharer and issubclass(exc_type, broken):
            return
        previous(exc_type, exc, tb)

    excepthook.quiet_broken_handoffs = True
    sys.excepthook = excepthook
