"""Exclusive locks on the outputs a stage writes, so two writers never interleave in one folder.

    with lock_output(run_dir, "student run"):        # <run_dir>/.lpld.lock
        ...
    lock_output(root, "recovery", key="new003")      # <root>/.lpld.new003.lock: one class
    lock_output(store, "label store", beside=True)   # <parent>/.<store>.lpld.lock

A second writer fails at once with one line naming the holder (pid, host, command, start time),
recorded in the lock file. The lock is a POSIX record lock (``fcntl.lockf``): the kernel drops it
when the holder exits or is killed, so a lock file left by a crash never blocks a rerun, and, unlike
``flock``, it is not inherited by forked DataLoader workers, which may outlive a killed parent for a
few seconds. The file is removed on release; a waiter that opened the removed file notices (inode
check) and retries on the new one.

Locks are re-entrant within a process (the pipeline runs every stage in one process, and a stage
may lock what its caller already holds). A lock is released by :meth:`OutputLock.release`, at the
end of a ``with`` block, or when its handle is garbage-collected.
"""
from __future__ import annotations

import datetime
import errno
import fcntl
import json
import os
import socket
import sys
import threading

from .atomic import remove_stale_temporaries
from .errors import OutputLockedError
from .runtime import is_main_process

_held: dict[str, list] = {}  # lock file (real path) -> [fd, handle count]
_guard = threading.Lock()


def lock_file_for(path: str, key: str | None = None, beside: bool = False) -> str:
    path = os.path.abspath(path)
    if beside:
        return os.path.join(os.path.dirname(path), f".{os.path.basename(path)}.lpld.lock")
    return os.path.join(path, f".lpld.{key}.lock" if key else ".lpld.lock")


def _holder_text(lock_path: str) -> str:
    try:
        with open(lock_path) as f:
            info = json.load(f)
        return (f"pid {info.get('pid')} on {info.get('host')} since {info.get('started')} "
                f"({info.get('command')})")
    except (OSError, ValueError):
        return "a process that is starting up"


class OutputLock:
    """A held lock (one handle); see the module docstring."""

    def __init__(self, lock_path: str, what: str) -> None:
        self.path = lock_path
        self.what = what
        self._real = os.path.realpath(lock_path)
        self._held = False

    def acquire(self) -> "OutputLock":
        with _guard:
            entry = _held.get(self._real)
            if entry is not None:  # this process holds it already
                entry[1] += 1
                self._held = True
                return self
            fd = self._lock_new_file()
            _held[self._real] = [fd, 1]
            self._held = True
        return self

    def _lock_new_file(self) -> int:
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        for _ in range(20):
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
            try:
                fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as err:
                os.close(fd)
                if err.errno not in (errno.EACCES, errno.EAGAIN):
                    raise
                raise OutputLockedError(
                    f"the {self.what} is being written by another process: {_holder_text(self.path)} "
                    f"holds {self.path}. Wait for it to finish (or stop it), or choose another output "
                    f"directory.") from None
            try:
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if not same:  # the holder released and removed the file we opened: try the new one
                os.close(fd)
                continue
            info = {"pid": os.getpid(), "host": socket.gethostname(), "what": self.what,
                    "command": " ".join(sys.argv)[:300],
                    "started": datetime.datetime.now().isoformat(timespec="seconds")}
            os.ftruncate(fd, 0)
            os.pwrite(fd, (json.dumps(info) + "\n").encode(), 0)
            return fd
        raise OutputLockedError(f"could not lock {self.path}: it keeps being replaced by other processes")

    def release(self) -> None:
        with _guard:
            if not self._held:
                return
            self._held = False
            entry = _held.get(self._real)
            if entry is None:
                return
            entry[1] -= 1
            if entry[1] > 0:
                return
            del _held[self._real]
            try:
                os.remove(self.path)  # while still locked: a waiter then sees another inode
            except OSError:
                pass
            os.close(entry[0])

    @property
    def held(self) -> bool:
        return self._held

    def __enter__(self) -> "OutputLock":
        return self

    def __exit__(self, *exc) -> None:
        self.release()

    def __del__(self) -> None:
        try:
            self.release()
        except Exception:  # noqa: BLE001 - interpreter shutdown
            pass


def lock_output(path: str, what: str, *, key: str | None = None, beside: bool = False) -> OutputLock:
    """Take the exclusive lock of the output ``path`` (see the module docstring)."""
    return OutputLock(lock_file_for(path, key, beside), what).acquire()


def lock_run_dir(path: str, what: str) -> OutputLock | None:
    """Lock an output directory (the main process only: the others write nothing there) and clear
    the temporaries a killed run left in it."""
    if not is_main_process():
        return None
    os.makedirs(path, exist_ok=True)
    lock = lock_output(path, what)
    remove_stale_temporaries(path)
    return lock
