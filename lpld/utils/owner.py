"""Which folders are ours: lpld writes into, replaces or clears only folders it made.

A folder is *ours* when it holds

* the owner marker ``.lpld.json`` (``{"by": "lpld", "kind": ...}``), written by :func:`claim_dir`
  into every output folder a stage creates or starts to fill (a student run, a teacher's folder,
  an image set, a report or pipeline folder, a diversity folder), or
* the manifest its writer puts there before anything else: ``demo.json`` (demo dataset),
  ``manifest.json`` / ``lpld_manifest.json`` of format ``lpld-soft-labels`` (label stores, which
  carry no other file: every byte in them counts as label storage), ``recover.json`` /
  ``rded.json`` / ``random_real.json`` (image sets), ``final.json`` / ``row.json`` (students) --
  folders made before the marker existed are recognised by these (:data:`LEGACY`), or
* the fill marker ``.lpld.filling`` that :func:`lpld.utils.io.atomic_dir` writes while it fills an
  existing folder (a killed fill is ours to redo).

An empty folder may be used (it is kept: its owner, group and mode stay, so a shared group folder
stays shared). Anything else is *foreign*: it is never removed, replaced or written into, whatever
``--overwrite`` / ``--recompute`` say; the stage stops with :class:`ForeignFolderError`, one line
naming the folder. lpld's own lock files (``.lpld*.lock``) and the temporaries of its atomic
writes do not make a folder non-empty.
"""
from __future__ import annotations

import json
import os
import shutil
from typing import Callable, Iterable

from .atomic import atomic_json_dump, is_temporary
from .errors import LpldInputError

MARKER = ".lpld.json"
FILLING = ".lpld.filling"
# kind -> files (relative paths) that only lpld's writer of that kind puts in a folder: folders
# made before the owner marker are recognised by them
LEGACY = {
    "images": ("recover.json", "rded.json", "random_real.json"),
    "validate": ("final.json", "row.json", "checkpoint.pth"),
    "squeeze": ("teacher.pth", "checkpoint.pth", "teacher_class_bn.pth"),
    "diversity": ("diversity_summary.json",),
    "demo": ("demo.json",),
    "report": ("results.json",),
    "pipeline": ("results.json", "data/demo.json", "squeeze/teacher.pth", "students"),
}
class ForeignFolderError(LpldInputError, FileExistsError):
    """A folder lpld did not make stands where a stage would write, replace or clear."""


def is_bookkeeping(name: str) -> bool:
    """lpld's own lock, marker and temporary files: they do not make a folder non-empty."""
    return name.startswith(".lpld") or is_temporary(name)


def entries(path: str) -> list[str]:
    """The entries of ``path`` that are content (not lpld bookkeeping); [] when it does not exist."""
    if not os.path.isdir(path):
        return []
    return sorted(e for e in os.listdir(path) if not is_bookkeeping(e))


def marker_kind(path: str) -> str | None:
    try:
        with open(os.path.join(path, MARKER)) as f:
            data = json.load(f)
    except (OSError, ValueError):
        return None
    return data.get("kind") if isinstance(data, dict) and data.get("by") == "lpld" else None


def _legacy(path: str, kinds: Iterable[str]) -> bool:
    return any(os.path.exists(os.path.join(path, rel)) for kind in kinds for rel in LEGACY.get(kind, ()))


def is_ours(path: str, kinds: Iterable[str] | None = None) -> bool:
    """``path`` holds the owner marker (of one of ``kinds``, when given), a fill marker, or a
    manifest that only lpld writes there (:data:`LEGACY`)."""
    kinds = None if kinds is None else tuple(kinds)
    kind = marker_kind(path)
    if kind is not None and (kinds is None or kind in kinds):
        return True
    if os.path.isfile(os.path.join(path, FILLING)):
        return True
    return _legacy(path, LEGACY if kinds is None else kinds)


def foreign_error(path: str, what: str, fix: str = "") -> ForeignFolderError:
    return ForeignFolderError(f"{path} is not empty and was not made by lpld (no {MARKER}): the {what} is "
                              f"never written into, replaced or removed there; "
                              f"{fix or 'choose a new or empty folder'}")


def write_marker(path: str, kind: str) -> None:
    if marker_kind(path) is None:
        atomic_json_dump({"by": "lpld", "kind": kind}, os.path.join(path, MARKER))


def claim_dir(path: str, kind: str, what: str, *, accept: Iterable[str] = (),
              owned: Callable[[str], bool] | None = None) -> str:
    """Make ``path`` (a new folder) or take an empty one, and mark it ours (kind ``kind``); an
    existing folder of ours (marker of ``kind`` or of one of ``accept``, :data:`LEGACY` files,
    or ``owned(path)``) is kept as it is. A foreign folder raises :class:`ForeignFolderError`."""
    if os.path.exists(path) and not os.path.isdir(path):
        raise ForeignFolderError(f"the {what} {path} is a file, not a folder; choose a folder")
    kinds = (kind, *accept)
    if entries(path):
        other = marker_kind(path)
        if other is not None and other not in kinds:
            raise ForeignFolderError(f"{path} is lpld's {other} folder, not a {what}; choose another folder")
        if not (is_ours(path, kinds) or (owned is not None and owned(path))):
            raise foreign_error(path, what)
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as err:
        raise PermissionError(f"cannot create the {what} {path}: {err.strerror}. Choose a writable location.") from err
    if not os.access(path, os.W_OK | os.X_OK):
        raise PermissionError(f"the {what} {path} is not writable. Choose a writable location.")
    write_marker(path, kind)
    return path


def clear_dir(path: str, owned: Callable[[str], bool], what: str, keep: Iterable[str] = ()) -> None:
    """Remove the content of our folder ``path``, keeping the folder itself (its owner, group and
    mode), lpld's lock files and ``keep``; a foreign folder raises :class:`ForeignFolderError`."""
    if not os.path.isdir(path):
        return
    if entries(path) and not (owned(path) or os.path.isfile(os.path.join(path, FILLING))):
        raise foreign_error(path, what, "it is left as it is; move it away yourself to recompute it")
    for name in os.listdir(path):
        if name.endswith(".lock") or name in keep:  # a lock held by a writer stays valid
            continue
        full = os.path.join(path, name)
        if os.path.isdir(full) and not os.path.islink(full):
            shutil.rmtree(full)
        else:
            os.remove(full)
