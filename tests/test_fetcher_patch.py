"""The run-time fetcher patch versus the authors' manual PyTorch edit (patches/*.patch).

The reference applies ``patches/torch_fetch_fkd_load.patch`` to a copy of the installed torch's
``fetch.py`` and drives the patched ``_MapDatasetFetcher`` with a dataset that behaves like the
authors' ``ImageFolder_FKD_MIX`` in ``fkd_load`` / ``use_batch`` mode (labels found through the
``{first image: batch}`` mapping, images transformed one by one with the batch's recorded crop
and flip, mix applied after collation as their training loop does).
"""
from __future__ import annotations

import importlib.util
import re
import os
import shutil
import subprocess

import pytest
import torch
from torch.utils.data import DataLoader, Dataset
from torch.utils.data._utils import fetch as torch_fetch
from torch.utils.data._utils.collate import default_collate

from lpld.augment import apply_view
from lpld.data import ImageFolder, load_rgb, normalization
from lpld.validate import fetcher_patch
from lpld.validate.fetcher_patch import FetcherPatchError, LabelBatchFetcher, check_torch_internals
from lpld.validate.loader import BatchInputs, PlannedBatchSampler, SoftLabelBatches, build_train_loader

pytestmark = pytest.mark.usefixtures("one_thread")

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PATCH = os.path.join(REPO, "patches", "torch_fetch_fkd_load.patch")
SIZE = 16
MEAN, STD = normalization("demo")


class FixedPlan:
    """A plan whose every epoch is the given list of stored batch ids."""

    def __init__(self, ids):
        self.ids = list(ids)
        self.batches_per_epoch = len(self.ids)

    def epoch_batches(self, epoch):
        return list(self.ids)


@pytest.fixture(scope="module")
def patched_fetch(tmp_path_factory):
    """torch's fetch.py with the authors' edit applied from patches/ (as a user would)."""
    if shutil.which("patch") is None:
        pytest.skip("the `patch` program is not installed")
    root = tmp_path_factory.mktemp("torch_copy")
    target = root / "torch" / "utils" / "data" / "_utils" / "fetch.py"
    target.parent.mkdir(parents=True)
    shutil.copy(torch_fetch.__file__, target)
    with open(PATCH) as f:
        done = subprocess.run(["patch", "-p1", "-d", str(root)], stdin=f, capture_output=True, text=True)
    assert done.returncode == 0, f"patch does not apply to torch {torch.__version__}: {done.stdout}{done.stderr}"
    spec = importlib.util.spec_from_file_location("authors_patched_fetch", target)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def collision_store(demo_root, tmp_path_factory, make_label_store):
    """Cutmix labels for 3 epochs; epochs 0 and 1 both start with image 5, so stored batches 0 and
    6 (batches_per_epoch 6) have the same first image."""
    train = os.path.join(demo_root, "train")
    n = len(ImageFolder(train))
    g = torch.Generator().manual_seed(1)
    orders = {}
    for e in (0, 1):
        rest = [i for i in torch.randperm(n, generator=g).tolist() if i != 5]
        orders[e] = [5] + rest
    store = make_label_store(train, str(tmp_path_factory.mktemp("labels") / "store"), None, num_classes=4,
                             batch_size=8, epochs=3, mix_type="cutmix", size=SIZE, epoch_orders=orders)
    return train, store


class AuthorsStyleDataset(Dataset):
    """ImageFolder_FKD_MIX in fkd_load mode with use_batch (the authors' dataset, rebuilt on our store)."""

    mode = "fkd_load"
    use_batch = True

    def __init__(self, train_dir, store):
        self.images = ImageFolder(train_dir)
        self.store = store
        self.batch_mapping = None

    def set_batch_list(self, batch_list):
        # authors' sampler.get_batch_list_img_mapping(): {first image of batch: batch id}
        self.batch_mapping = {int(self.store.read(b).image_indices[0]): b for b in batch_list}

    def load_batch_config_by_batch_idx(self, img_idx):
        record = self.store.read(self.batch_mapping[int(img_idx)])
        self.config, self.config_idx = record, 0
        return record.mix_index, record.mix_lam, record.mix_bbox, record.logits

    def __getitem__(self, index):
        k = self.config_idx
        self.config_idx += 1
        path, target = self.images.samples[index]
        view = apply_view(load_rgb(path), self.config.crops[k], bool(self.config.flips[k]), None, SIZE, MEAN, STD)
        return view, target

    def __len__(self):
        return len(self.images)


def authors_batches(patched_fetch, train_dir, store, batch_list):
    """What the authors' training loop sees for an assembled epoch ``batch_list``."""
    dataset = AuthorsStyleDataset(train_dir, store)
    dataset.set_batch_list(batch_list)
    fetcher = patched_fetch._MapDatasetFetcher(dataset, True, default_collate, False)
    out = []
    for b in batch_list:  # their sampler yields the flattened image order of the listed batches
        indices = store.read(b).image_indices.tolist()
        (images, targets), mix_index, lam, bbox, soft = fetcher.fetch(indices)
        if bbox is not None:  # their cutmix() in the training loop
            x1, y1, x2, y2 = bbox
            images[:, :, x1:x2, y1:y2] = images[mix_index, :, x1:x2, y1:y2]
        out.append((images, soft.float(), targets))
    return out


def our_batches(train_dir, store, batch_list, workers=0, fetcher="patch", cache_images=False):
    dataset = SoftLabelBatches(ImageFolder(train_dir), store.path, SIZE, MEAN, STD, cache_images=cache_images)
    sampler = PlannedBatchSampler(FixedPlan(batch_list))
    loader = build_train_loader(dataset, sampler, workers=workers, pin_memory=False, fetcher=fetcher)
    inputs = BatchInputs(torch.device("cpu"), MEAN, STD)  # normalise and mix, as the trainer does
    return [(*inputs(b)[:2], b.targets, int(b.batch_id)) for b in loader]


def test_run_time_patch_equals_the_manual_patch(patched_fetch, collision_store):
    train, store = collision_store
    batch_list = [3, 14, 0, 9, 17]  # an assembled epoch, no two batches share a first image
    assert len({int(store.read(b).image_indices[0]) for b in batch_list}) == len(batch_list)
    reference = authors_batches(patched_fetch, train, store, batch_list)
    for workers in (0, 2):
        ours = our_batches(train, store, batch_list, workers=workers)
        assert [b[3] for b in ours] == batch_list
        for (ref_img, ref_soft, ref_t), (img, soft, t, _) in zip(reference, ours):
            torch.testing.assert_close(img, ref_img, rtol=0, atol=0)
            torch.testing.assert_close(soft, ref_soft, rtol=0, atol=0)
            assert torch.equal(t, ref_t)


def test_collision_loads_the_right_labels(patched_fetch, collision_store):
    train, store = collision_store
    first, second = store.read(0), store.read(6)
    assert int(first.image_indices[0]) == int(second.image_indices[0]) == 5
    batch_list = [0, 6]
    reference = authors_batches(patched_fetch, train, store, batch_list)
    # the authors' first-image lookup gives batch 0 the labels of batch 6
    assert torch.equal(reference[0][1], second.logits.float())
    assert not torch.equal(reference[0][1], first.logits.float())
    ours = our_batches(train, store, batch_list, workers=2)
    assert [b[3] for b in ours] == [0, 6]
    assert torch.equal(ours[0][1], first.logits.float()) and torch.equal(ours[1][1], second.logits.float())
    # and the images are batch 0's own (its crops/flips/cutmix), not batch 6's
    assert not torch.equal(ours[0][0], ours[1][0])
    assert torch.equal(ours[1][0], reference[1][0])


def test_getitems_fallback_and_image_cache_give_the_same_batches(collision_store):
    train, store = collision_store
    ids = [2, 6, 0]
    a = our_batches(train, store, ids, fetcher="patch")
    b = our_batches(train, store, ids, fetcher="getitems")
    c = our_batches(train, store, ids + ids, cache_images=True)  # second pass from the image cache
    for x, y, z, w in zip(a, b, c[:3], c[3:]):
        for other in (y, z, w):
            assert torch.equal(x[0], other[0]) and torch.equal(x[1], other[1]) and x[3] == other[3]


def test_patch_is_scoped_to_our_loader(collision_store):
    train, store = collision_store
    our_batches(train, store, [1], workers=0)
    assert torch_fetch._MapDatasetFetcher is fetcher_patch._ORIGINAL_FETCHER  # restored
    plain = DataLoader(list(range(6)), batch_size=3)
    it = iter(plain)
    assert type(it._dataset_fetcher) is fetcher_patch._ORIGINAL_FETCHER
    assert next(it).tolist() == [0, 1, 2]
    # our fetcher serves any other dataset exactly like torch's
    assert LabelBatchFetcher(list(range(6)), True, default_collate, False).fetch([4, 5]).tolist() == [4, 5]


def test_stock_fetcher_is_refused_with_a_clear_message(collision_store):
    train, store = collision_store
    dataset = SoftLabelBatches(ImageFolder(train), store.path, SIZE, MEAN, STD)
    loader = DataLoader(dataset, batch_sampler=PlannedBatchSampler(FixedPlan([1])), collate_fn=lambda x: x)
    with pytest.raises(RuntimeError, match="fetcher patch is not active"):
        next(iter(loader))


def test_unsupported_torch_internals_fail_clearly(monkeypatch):
    check_torch_internals()  # the installed torch is supported

    class Foreign(torch_fetch._BaseDatasetFetcher):
        def fetch(self, possibly_batched_index, extra=None):
            return None

    monkeypatch.setattr(fetcher_patch, "_CHECKED", [])
    monkeypatch.setattr(torch_fetch, "_MapDatasetFetcher", Foreign)
    with pytest.raises(FetcherPatchError, match=re.escape(f"torch {torch.__version__}") + ".*replaced.*--fetcher getitems"):
        check_torch_internals()
    monkeypatch.setattr(torch_fetch, "_MapDatasetFetcher", fetcher_patch._ORIGINAL_FETCHER)
    monkeypatch.setattr(fetcher_patch, "_ORIGINAL_FETCHER", Foreign)
    monkeypatch.setattr(torch_fetch, "_MapDatasetFetcher", Foreign)
    with pytest.raises(FetcherPatchError, match="fetch takes"):
        check_torch_internals()
