"""The authors' sampler_indices_epoch.json as a memory-mapped int32 index, cached beside our outputs."""
from __future__ import annotations

import json
import os
import pickle
import stat

import numpy as np
import pytest
import torch

from lpld.augment import sample_batch_params
from lpld.labels import AuthorsLabelStore, AuthorsStoreWriter, open_label_store
from lpld.labels.authors import SAMPLER_JSON
from lpld.labels.sampler_index import SamplerIndex


def write_authors_store(path: str, *, images: int = 30, batch_size: int = 8, epochs: int = 3, seed: int = 0):
    per_epoch = -(-images // batch_size)
    manifest = dict(dataset="demo", teacher="t", seed=0, batch_size=batch_size, epochs=epochs,
                    batches_per_epoch=per_epoch, planned_batches=per_epoch * epochs, prune_ratio=0.0,
                    mix_type="cutmix", num_classes=5, num_images=images, image_size=8, cutout=False,
                    drop_last=False, logits_dtype="float16")
    gen = torch.Generator().manual_seed(seed)
    orders = {e: torch.randperm(images, generator=gen).tolist() for e in range(epochs)}
    writer = AuthorsStoreWriter(path, manifest, resume=False)
    for gid in range(per_epoch * epochs):
        epoch, index = divmod(gid, per_epoch)
        idx = orders[epoch][index * batch_size:(index + 1) * batch_size]
        rec = sample_batch_params(gid, idx, [(8, 8)] * len(idx), seed=0, size=8, mix_type="cutmix")
        rec.logits = torch.randn(len(idx), 5, generator=gen)
        writer.write(rec)
    writer.close()
    return orders


def test_writer_json_is_json_dumps_of_the_lists(tmp_path):
    orders = write_authors_store(str(tmp_path / "labels"))
    text = (tmp_path / "labels" / SAMPLER_JSON).read_text()
    assert text == json.dumps({str(e): v for e, v in orders.items()})


def test_index_serves_the_json_and_pickles_small(tmp_path):
    labels, cache = str(tmp_path / "labels"), str(tmp_path / "out")
    orders = write_authors_store(labels)
    store = open_label_store(labels, index_dir=cache)
    for e, order in orders.items():
        assert store.epoch_image_order(e).tolist() == order
        assert store.read(e * store.batches_per_epoch + 1).image_indices.tolist() == order[8:16]
    assert store.max_image_index() == 29
    files = sorted(os.listdir(cache))
    assert len(files) == 2 and files[0].endswith(".json") and files[1].endswith(".npy")
    assert np.load(os.path.join(cache, files[1]), mmap_mode="r").dtype == np.int32
    # what a DataLoader worker receives: paths and a few numbers, no lists of indices
    blob = pickle.dumps(store)
    assert len(blob) < 4000
    again = pickle.loads(blob)
    assert again.read(5).image_indices.tolist() == store.read(5).image_indices.tolist()


def test_read_only_label_folder_and_changed_json(tmp_path):
    labels, cache = tmp_path / "labels", str(tmp_path / "out")
    write_authors_store(str(labels))
    before = sorted(os.listdir(labels))
    mode = labels.stat().st_mode
    labels.chmod(stat.S_IRUSR | stat.S_IXUSR)
    try:
        store = AuthorsLabelStore(str(labels), index_dir=cache)
        assert store.num_batches == 12
    finally:
        labels.chmod(mode)
    assert sorted(os.listdir(labels)) == before  # nothing written into the authors' folder
    # a different json (same size even) gets its own index: a stale one is never served
    path = labels / SAMPLER_JSON
    data = json.loads(path.read_text())
    data["0"][0], data["0"][1] = data["0"][1], data["0"][0]
    path.write_text(json.dumps(data))
    changed = AuthorsLabelStore(str(labels), index_dir=cache)
    assert changed.epoch_image_order(0).tolist() == data["0"]
    assert len(os.listdir(cache)) == 4


def test_pretty_printed_json_and_bad_values(tmp_path):
    src = tmp_path / "s.json"
    src.write_text(json.dumps({"0": [3, 1, 2], "1": []}, indent=2))
    idx = SamplerIndex.open(str(src), str(tmp_path / "c"))
    assert idx.take(0).tolist() == [3, 1, 2] and idx.length(1) == 0 and idx.max_index == 3
    src.write_text(json.dumps({"0": [3, -1]}))
    with pytest.raises(ValueError, match="image index -1"):
        SamplerIndex.open(str(src), str(tmp_path / "c"))
