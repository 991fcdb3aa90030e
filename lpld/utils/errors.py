"""The errors the command line reports in one line (everything else keeps its traceback).

An :class:`LpldInputError` says the input is wrong -- a path, a setting, a file that belongs to
something else -- and its message names the file, the value and the fix. Each concrete error
also derives from the builtin a caller would expect (``ValueError``, ``RuntimeError`` ...), so
``except ValueError`` keeps working.
"""
from __future__ import annotations


class LpldInputError(Exception):
    """Base of every input error; the CLI prints ``<command>: error: <message>`` and exits 2."""


class InputValueError(LpldInputError, ValueError):
    """A value, a setting or a file's content that cannot be used as given."""


class DeviceUnavailableError(LpldInputError, RuntimeError):
    """``--device cuda`` on a machine without a usable GPU."""


class OutputLockedError(LpldInputError, RuntimeError):
    """Another process is writing the same output."""


class DiskSpaceError(LpldInputError, OSError):
    """Not enough free space for what a stage is about to write: ``DiskSpaceError(errno, message)``."""

    def __str__(self) -> str:
        return str(self.strerror)


class StoreDamagedError(LpldInputError, ValueError):
    """A label store whose files are truncated, missing or do not match their checksums."""


class BadImagesError(LpldInputError, ValueError):
    """Image files that cannot be decoded (found by the check before a stage starts)."""


class UnreadableFileError(LpldInputError, RuntimeError):
    """A checkpoint or data file that exists but cannot be read."""


class UnsafeFileError(UnreadableFileError):
    """A torch file holding objects outside :func:`lpld.utils.safe_load.allowed_globals`: unpickling
    them could run code from the file, so it is refused before anything in it is built."""


class UnreadableImageError(LpldInputError, RuntimeError):
    """One image file that cannot be decoded, met while loading."""


class ClassListError(LpldInputError, ValueError):
    """Two class lists (dataset splits, teacher, label store, distilled images) that disagree."""


class FetcherPatchError(RuntimeError):
    """The installed torch's DataLoader internals differ from what the label-batch fetcher
    (:mod:`lpld.validate.fetcher_patch`) patches; the message names the version and the way out."""
