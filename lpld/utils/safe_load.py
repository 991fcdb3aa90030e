"""Reading torch files without running code from them.

A ``.pth`` / ``.tar`` file is a pickle, and a pickle may name any Python callable to be called when
it is read (``os.system`` included): torch's full unpickler, on a checkpoint from a shared
folder, runs whatever its author wanted. Every file lpld reads with ``torch.load`` goes
through :func:`safe_torch_load`, which uses torch's restricted unpickler (``weights_only=True``:
tensors, and dicts, lists, tuples, strings, numbers, ``None`` ...) plus :func:`allowed_globals`,
the few numpy types our checkpoints and the authors' files hold. Anything else is refused with
:class:`~lpld.utils.errors.UnsafeFileError` before it is built, so nothing in the file runs.
"""
from __future__ import annotations

import os
import pickle
import re
import threading
from typing import IO, Any

import numpy as np
import torch

from .errors import UnsafeFileError

# The weights_only allow-list is process-wide state that torch's context manager adds to and
# removes from: two threads loading at once would remove each other's entries mid-load.
_LOCK = threading.Lock()

_DEFAULT_FIX = "delete it, or use a file written by lpld"
# The way out for a training checkpoint: what it would have resumed is only lost epochs.
RESUME_FIX = "delete it to start the training again, or use another --output-dir"


def allowed_globals() -> list:
    """What :func:`safe_torch_load` accepts beyond torch's own weights_only defaults, and why:

    * ``numpy.ndarray`` + ``_reconstruct`` + ``numpy.dtype`` + the uint32 dtype class: the key
      array of ``np.random.get_state()``, in the RNG state of every training checkpoint (student
      ``checkpoint.pth``, teacher ``checkpoint.pth``), so that a resumed run continues numpy's
      random stream exactly (``np.random.set_state`` needs the array back).
    * numpy's ``scalar`` + the int64 / int32 / float64 / float32 dtype classes: the numpy scalars
      of the authors' ``batch_*.tar`` label files (the CutMix box as numpy ints, its lambda as a
      numpy float).

    The dtype classes are what lets numpy build a dtype at all; object, structured and every other
    dtype stay refused, so no array or scalar can carry arbitrary Python objects. Each function is
    listed under both names numpy has pickled it with: ``numpy.core.multiarray`` (numpy 1, the
    authors' files and older checkpoints) and ``numpy._core.multiarray`` (numpy 2).
    """
    reconstruct = np.ndarray(0).__reduce__()[0]  # the very functions numpy pickles with
    scalar = np.int64(0).__reduce__()[0]
    entries: list = [np.ndarray, np.dtype]
    entries += [type(np.dtype(t)) for t in (np.uint32, np.int64, np.int32, np.float64, np.float32)]
    for module in ("numpy.core.multiarray", "numpy._core.multiarray"):
        entries += [(reconstruct, f"{module}._reconstruct"), (scalar, f"{module}.scalar")]
    return entries


def _refused_object(message: str) -> str:
    """The object torch's unpickler refused, from its (multi-line) message."""
    found = re.search(r"GLOBAL (\S+)", message) or re.search(r"(?:function|got) (<[^>]*>)", message)
    return found.group(1) if found else "a pickle instruction or object outside the allow-list"


def safe_torch_load(source: str | os.PathLike | IO[bytes], *, what: str, name: str | None = None,
                    fix: str = _DEFAULT_FIX, mmap: bool = False) -> Any:
    """``torch.load(source, map_location="cpu", weights_only=True)`` with :func:`allowed_globals`.

    ``what`` says what the file is ("checkpoint", "soft-label batch" ...) and ``name`` which file
    it is (default: ``source`` when it is a path); both go into the error, with ``fix``, the way
    out. A file holding anything outside the allow-list raises :class:`UnsafeFileError` (one
    line); every other failure (a missing, truncated or damaged file) propagates as torch raised it.
    """
    if name is None:
        name = os.fspath(source) if isinstance(source, (str, os.PathLike)) else "<bytes>"
    try:
        with _LOCK, torch.serialization.safe_globals(allowed_globals()):
            return torch.load(source, map_location="cpu", weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as err:
        raise UnsafeFileError(
            f"{what} {name} holds {_refused_object(str(err))}, which lpld does not load: a file may hold only "
            f"tensors, plain Python values and numpy RNG states and scalars, because unpickling any other "
            f"object could run code from the file. It was not written by lpld or the authors' code, or it "
            f"was altered: {fix}") from err
