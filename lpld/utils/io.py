"""Crash-safe writes and disk space: nothing half-written is ever visible under its final name.

The single-file primitives (:func:`atomic_path`, :func:`atomic_write_text`,
:func:`atomic_json_dump`, :func:`remove_stale_temporaries`) live in :mod:`lpld.utils.atomic` and
are handed on here, so a stage imports every write from this one module. Built on them:
:func:`atomic_dir` (a folder filled, then swapped in -- only a folder of ours,
:mod:`lpld.utils.owner`), :func:`atomic_torch_save` (checkpoints and batch files), the writable
output folder, and the disk-space checks made before any work.
"""
from __future__ import annotations

import contextlib
import errno
import hashlib
import io
import os
import shutil
import tempfile
from typing import Any, Callable, Iterable, Iterator, Sequence

import torch

from .atomic import (TEMPORARY, _umask, atomic_json_dump, atomic_path, atomic_write_text,  # noqa: F401
                     is_temporary, remove_stale_temporaries)
from .errors import DiskSpaceError
from .owner import FILLING, claim_dir, clear_dir, entries, foreign_error


@contextlib.contextmanager
def atomic_dir(path: str, *, owned: Callable[[str], bool] | None = None, last: Sequence[str] = (),
               what: str = "folder being written") -> Iterator[str]:
    """Yield a temporary directory to fill; on success its content becomes ``path``.

    ``path`` absent: the temporary is a sibling, renamed to ``path`` (atomic). ``path`` an existing
    folder: the folder itself is kept -- a rename would replace it with one of our owner, group and
    mode, so a shared group folder (e.g. mode 2775) would stop being shared -- so the temporary is
    a hidden folder inside it (what is made there inherits a set-group-id folder's group), and its
    content is then swapped in: the fill marker (:data:`lpld.utils.owner.FILLING`) first, the old
    entries removed, the new ones moved in (``last``, e.g. the manifest readers look for, at the
    end), the marker removed. A swap killed half-way leaves the marker: the folder is recognised as
    ours and redone.

    Only an empty folder or one of ours (``owned(path)``, or a fill marker) is filled; any other
    raises :class:`~lpld.utils.owner.ForeignFolderError` before anything is written, and nothing
    in it is touched."""
    def check() -> None:
        if os.path.exists(path) and not os.path.isdir(path):
            raise foreign_error(path, what, "it is a file: choose a folder")
        if entries(path) and not (os.path.isfile(os.path.join(path, FILLING)) or (owned and owned(path))):
            raise foreign_error(path, what)

    check()  # before any work: a foreign folder fails at once
    in_place = os.path.isdir(path)
    if in_place:
        tmp = tempfile.mkdtemp(prefix=".lpld.fill.", suffix=".tmp", dir=path)
    else:
        parent = os.path.dirname(os.path.abspath(path))
        os.makedirs(parent, exist_ok=True)
        tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=parent)
    try:
        yield tmp
        check()
        if not in_place:
            os.chmod(tmp, 0o777 & ~_umask())
            os.replace(tmp, path)
            return
        with open(os.path.join(path, FILLING), "w"):
            pass
        stage = os.path.basename(tmp)
        clear_dir(path, lambda _: True, what, keep=(FILLING, stage))  # checked above: empty or ours
        names = sorted(os.listdir(tmp), key=lambda n: (n in last, last.index(n) if n in last else 0, n))
        for name in names:
            os.replace(os.path.join(tmp, name), os.path.join(path, name))
        os.rmdir(tmp)
        os.remove(os.path.join(path, FILLING))
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def atomic_torch_save(obj: Any, path: str) -> str:
    """``torch.save`` into memory, then an ordinary atomic file write; returns the sha256 of the
    bytes written. A full disk raises a plain ``OSError(ENOSPC)`` naming the file (torch's own
    writer reports an opaque RuntimeError) and the previous file stays intact; the bytes do not
    depend on the temporary file's name (torch names the archive after the file it writes)."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(buffer.getbuffer())
    return hashlib.sha256(buffer.getbuffer()).hexdigest()


def ensure_writable_dir(path: str, what: str = "output directory", owner: str | None = None) -> str:
    """Create ``path`` if needed and check it is writable, with an error that names it.

    ``owner``: the kind of output folder (``validate``, ``images`` ...): the folder is then claimed
    (:func:`lpld.utils.owner.claim_dir`), so a non-empty folder that lpld did not make is refused."""
    if owner is not None:
        return claim_dir(path, owner, what)
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as err:
        raise PermissionError(f"cannot create the {what} {path}: {err.strerror}. "
                              f"Choose a writable location.") from err
    if not os.access(path, os.W_OK | os.X_OK):
        raise PermissionError(f"the {what} {path} is not writable. Choose a writable location.")
    return path


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def free_bytes(path: str) -> int:
    """Free space (for an unprivileged user) on the filesystem that holds ``path`` or would hold it."""
    probe = os.path.abspath(path)
    while not os.path.exists(probe):
        parent = os.path.dirname(probe)
        if parent == probe:
            break
        probe = parent
    return shutil.disk_usage(probe).free


def _existing(path: str) -> str:
    probe = os.path.abspath(path)
    while not os.path.exists(probe) and os.path.dirname(probe) != probe:
        probe = os.path.dirname(probe)
    return probe


def on_disk(path: str, sizes: Iterable[int]) -> int:
    """Bytes that files of ``sizes`` occupy on the filesystem of ``path`` (each rounded up to whole
    blocks: many small files take far more than their sizes on a tmpfs or a 4 KiB-block disk)."""
    try:
        block = max(1, os.statvfs(_existing(path)).f_frsize)
    except (OSError, AttributeError):
        block = 4096
    return sum(-(-max(int(n), 1) // block) * block for n in sizes)


def require_free_space(path: str, needed: int, what: str) -> None:
    """Fail before any work when ``needed`` bytes will not fit next to ``path``."""
    free = free_bytes(path)
    if needed > free:
        raise DiskSpaceError(errno.ENOSPC, f"not enough disk space for the {what} at {path}: it needs "
                                           f"{human_bytes(needed)} ({needed:,} bytes), {human_bytes(free)} "
                                           f"({free:,} bytes) are free. Free some space or choose another "
                                           f"output directory.")


def reserve_file(path: str, size: int, what: str) -> None:
    """Allocate ``size`` bytes of ``path`` on disk now (``posix_fallocate``), so writing into its
    memory map later cannot hit a full disk (which kills the process with SIGBUS)."""
    if size <= 0 or not hasattr(os, "posix_fallocate"):
        return
    fd = os.open(path, os.O_RDWR)
    try:
        os.posix_fallocate(fd, 0, size)
    except OSError as err:
        if err.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
            raise DiskSpaceError(err.errno, f"not enough disk space for the {what} at {path}: it needs "
                                            f"{human_bytes(size)} ({size:,} bytes), "
                                            f"{human_bytes(free_bytes(path))} are free. Free some space or "
                                            f"choose another output directory.") from err
        if err.errno not in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):
            raise
    finally:
        os.close(fd)


def is_disk_full(err: BaseException) -> bool:
    return isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT)
