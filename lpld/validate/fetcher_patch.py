"""The authors' PyTorch edit, applied at run time and only to our label loader.

The authors ask users to edit ``torch.utils.data._utils.fetch._MapDatasetFetcher.fetch`` in
site-packages (README "Necessary Modification for Pytorch", and ``patches/`` here) so that every
DataLoader worker loads a batch's soft labels and mix parameters together with its images. Here
the same job is done by :class:`LabelBatchFetcher`, a subclass of torch's fetcher, which the
DataLoader uses only for :class:`~lpld.validate.loader.SoftLabelBatches`:

* in the main process, torch's fetcher class is swapped for ours only while
  :class:`SoftLabelDataLoader` builds its iterator (the single-process iterator and forked workers
  create their fetcher inside that window), then restored;
* in worker processes (any start method) the worker-init function installs it before torch
  creates the worker's fetcher; those processes serve nothing but our loader;
* :func:`check_torch_internals` verifies, before the first use, that the installed torch builds
  fetchers the way this relies on, and otherwise raises :class:`FetcherPatchError` naming the torch
  version, the missing piece and the fallback (``fetcher: getitems``).

Unlike the authors' edit, ours identifies the batch explicitly: the batch sampler yields a
:class:`~lpld.validate.loader.BatchRequest` holding the stored batch id, never the first image's
index (which is ambiguous when two batches of one epoch start with the same image).
"""
from __future__ import annotations

import contextlib
import functools
import inspect
from typing import Callable, Iterator

import torch
from torch.utils.data import DataLoader
from torch.utils.data._utils import fetch as torch_fetch

from ..utils.errors import FetcherPatchError
from ..utils.signals import quiet_broken_handoffs

_ORIGINAL_FETCHER = torch_fetch._MapDatasetFetcher
_CHECKED: list[bool] = []


class LabelBatchFetcher(_ORIGINAL_FETCHER):
    """``_MapDatasetFetcher`` that serves :class:`SoftLabelBatches` one whole stored batch at a time
    (soft labels, replayed mixed images, targets) and defers to torch for any other dataset."""

    def fetch(self, possibly_batched_index):
        load = getattr(self.dataset, "load_request", None)
        if load is not None and getattr(self.dataset, "lpld_soft_label_batches", False):
            return load(possibly_batched_index)
        return super().fetch(possibly_batched_index)


def _problem() -> str | None:
    """What keeps the run-time patch from working on this torch, or None."""
    fetcher = getattr(torch_fetch, "_MapDatasetFetcher", None)
    if fetcher is None or not isinstance(fetcher, type):
        return "torch.utils.data._utils.fetch._MapDatasetFetcher is missing"
    if fetcher is not _ORIGINAL_FETCHER and fetcher is not LabelBatchFetcher:
        return "torch.utils.data._utils.fetch._MapDatasetFetcher was replaced by someone else"
    try:
        init_params = list(inspect.signature(_ORIGINAL_FETCHER.__init__).parameters)
        fetch_params = list(inspect.signature(_ORIGINAL_FETCHER.fetch).parameters)
    except (TypeError, ValueError):
        return "cannot inspect _MapDatasetFetcher"
    if init_params[1:] != ["dataset", "auto_collation", "collate_fn", "drop_last"]:
        return f"_MapDatasetFetcher.__init__ takes {init_params[1:]}"
    if len(fetch_params) != 2:
        return f"_MapDatasetFetcher.fetch takes {fetch_params[1:]}"
    try:  # torch internals, probed here: a version without them is reported, not an import error
        from torch.utils.data.dataloader import _DatasetKind
    except ImportError:
        return "torch.utils.data.dataloader._DatasetKind is missing"
    probe = _Probe()
    with _swapped():
        try:
            made = _DatasetKind.create_fetcher(_DatasetKind.Map, probe, True, lambda x: x, False)
        except Exception as err:  # noqa: BLE001 - report whatever the internals did
            return f"_DatasetKind.create_fetcher failed: {err}"
    if not isinstance(made, LabelBatchFetcher):
        return "_DatasetKind.create_fetcher does not look up _utils.fetch._MapDatasetFetcher at call time"
    try:  # likewise probed
        from torch.utils.data._utils import worker
        src = inspect.getsource(worker._worker_loop)
    except (ImportError, AttributeError):
        return "torch.utils.data._utils.worker._worker_loop is missing"
    except (OSError, TypeError):
        src = None  # no source shipped: the loader's own guard still catches an unpatched worker
    if src is not None:
        i_init, i_fetch = src.find("init_fn(worker_id)"), src.find("create_fetcher(")
        if i_init < 0 or i_fetch < 0 or i_init > i_fetch:
            return "DataLoader workers no longer call worker_init_fn before creating their fetcher"
    return None


class _Probe(torch.utils.data.Dataset):
    def __getitem__(self, i):
        return i

    def __len__(self):
        return 1


def check_torch_internals() -> None:
    """Raise :class:`FetcherPatchError` if the run-time patch cannot work on the installed torch."""
    if _CHECKED:
        return
    problem = _problem()
    if problem is not None:
        raise FetcherPatchError(
            f"LPLD's run-time DataLoader fetcher patch does not apply to torch {torch.__version__}: "
            f"{problem}. Run with `--fetcher getitems` (no patch needed), or see patches/README.md "
            f"for the authors' manual edit.")
    _CHECKED.append(True)


@contextlib.contextmanager
def _swapped() -> Iterator[None]:
    previous = torch_fetch._MapDatasetFetcher
    torch_fetch._MapDatasetFetcher = LabelBatchFetcher
    try:
        yield
    finally:
        torch_fetch._MapDatasetFetcher = previous


def install_in_worker(worker_id: int, user_init: Callable[[int], None] | None = None) -> None:
    """worker_init_fn: runs in a worker process (serving only our loader) before torch creates the
    worker's fetcher, so the patch holds for spawn/forkserver workers too."""
    torch_fetch._MapDatasetFetcher = LabelBatchFetcher
    quiet_broken_handoffs()
    if user_init is not None:
        user_init(worker_id)


def patched_worker_init(user_init: Callable[[int], None] | None = None) -> Callable[[int], None]:
    return functools.partial(install_in_worker, user_init=user_init)


class SoftLabelDataLoader(DataLoader):
    """A DataLoader whose iterators fetch with :class:`LabelBatchFetcher`. Build it with
    ``worker_init_fn=patched_worker_init(...)`` (``build_train_loader`` does)."""

    def _get_iterator(self):
        check_torch_internals()
        with _swapped():
            return super()._get_iterator()
