"""Crash-safe writes of single files: nothing half-written is ever visible under its final name.

Every helper writes to a temporary sibling (same directory, so the final ``os.replace`` is an
atomic rename on POSIX) and renames only once the content is complete. The temporaries are named
``.<final name>.<8 random characters>.tmp`` (:func:`is_temporary`): a killed run's leftovers are
recognised and removed by the next one (:func:`remove_stale_temporaries`), and they never make a
folder count as holding content (:mod:`lpld.utils.owner`).

Folders filled atomically, and checkpoints, are written by :mod:`lpld.utils.io` on top of these.
"""
from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import tempfile
from typing import Any, Iterable, Iterator

# The names atomic_path / atomic_dir give their temporaries: "." + final name + "." + mkstemp's
# 8 random characters + ".tmp".
TEMPORARY = re.compile(r"^\.(?P<name>.+)\.[a-z0-9_]{8}\.tmp$")


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path: str) -> Iterator[str]:
    """Yield a temporary file path; on success it replaces ``path``, on error it is removed."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=directory)
    os.close(fd)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp creates 0600; give the file normal permissions
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)
        raise


def is_temporary(name: str) -> bool:
    """``name`` is the temporary of an atomic write (a file or a folder being filled)."""
    return bool(TEMPORARY.match(name))


def atomic_write_text(path: str, text: str) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "w") as f:
            f.write(text)


def atomic_json_dump(obj: Any, path: str) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def remove_stale_temporaries(directory: str, names: Iterable[str] | None = None) -> list[str]:
    """Delete the temporaries of :func:`atomic_path` / :func:`atomic_dir` that a killed run left in
    ``directory`` (only those of the final ``names``, when given). Call it only while holding the
    directory's lock: another writer's temporaries are in use."""
    if not os.path.isdir(directory):
        return []
    wanted = None if names is None else set(names)
    removed = []
    for entry in os.listdir(directory):
        match = TEMPORARY.match(entry)
        if not match or (wanted is not None and match.group("name") not in wanted):
            continue
        path = os.path.join(directory, entry)
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path, ignore_errors=True)
        else:
            with contextlib.suppress(FileNotFoundError):
                os.remove(path)
        removed.append(path)
    return removed
