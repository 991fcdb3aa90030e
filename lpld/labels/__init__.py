"""Soft-label stores: ours (memory-mapped arrays + manifest) and the authors' per-batch files.

    store = open_label_store(path)   # either format
    store.read(batch_id) -> lpld.augment.BatchRecord
    store.epoch_image_order(epoch), store.nbytes(), store.num_batches, store.manifest
    store.verify() -> ids of damaged batches
"""
from .authors import AuthorsLabelStore, is_authors_store, load_batch_file  # noqa: F401
from .authors_writer import AuthorsStoreWriter  # noqa: F401
from .common import (FORMAT_NAME, FORMAT_VERSION, StoreDamagedError, StoreMismatchError,  # noqa: F401
                     check_bound_inputs, check_compatible, image_list_fingerprint, plan_batches)
from .convert import FORMATS, convert, incomplete_reason, open_label_store, writer_for  # noqa: F401
from .store import LabelStore, array_specs  # noqa: F401
from .store_writer import LabelStoreWriter  # noqa: F401
