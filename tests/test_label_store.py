"""lpld.labels: our memory-mapped store, the authors' per-batch files, conversion, crash safety."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch

from lpld.augment import sample_batch_params
from lpld.labels import (AuthorsLabelStore, LabelStore, LabelStoreWriter, StoreMismatchError, check_compatible,
                         convert, open_label_store, plan_batches, writer_for)

NUM_IMAGES, BATCH, CLASSES, EPOCHS = 10, 4, 6, 2


def _manifest(mix="cutmix", cutout=False, prune=0.0, epochs=EPOCHS):
    per_epoch, planned, drop_last = plan_batches(NUM_IMAGES, BATCH, epochs, prune)
    return {"dataset": "demo", "teacher": {"arch": "resnet18"}, "seed": 1, "batch_size": BATCH, "epochs": epochs,
            "batches_per_epoch": per_epoch, "planned_batches": planned, "prune_ratio": prune, "mix_type": mix,
            "num_classes": CLASSES, "num_images": NUM_IMAGES, "image_size": 8, "cutout": cutout,
            "drop_last": drop_last, "logits_dtype": "float16"}


def _orders(epochs=EPOCHS):
    gen = torch.Generator().manual_seed(0)
    return {e: torch.randperm(NUM_IMAGES, generator=gen).tolist() for e in range(epochs)}


def _records(manifest):
    orders = _orders(manifest["epochs"])
    per_epoch, bs = manifest["batches_per_epoch"], manifest["batch_size"]
    for gid in range(manifest["planned_batches"]):
        epoch, index = divmod(gid, per_epoch)
        idx = orders[epoch][index * bs:(index + 1) * bs]
        rec = sample_batch_params(gid, idx, [(9, 7)] * len(idx), seed=3, size=8, cutout=manifest["cutout"],
                                  mix_type=manifest["mix_type"])
        rec.logits = torch.randn(len(idx), CLASSES, generator=torch.Generator().manual_seed(gid)).half()
        yield rec


def _same(a, b):
    for name in ("image_indices", "crops", "flips", "cutout", "mix_index", "logits"):
        x, y = getattr(a, name), getattr(b, name)
        assert (x is None) == (y is None), name
        if x is not None:
            assert x.dtype == y.dtype and torch.equal(x, y), name
    assert a.mix_lam == b.mix_lam and a.mix_bbox == b.mix_bbox and a.batch_id == b.batch_id


@pytest.mark.parametrize("mix,cutout", [("cutmix", False), ("mixup", False), ("none", True)])
def test_write_read_round_trip(tmp_path, mix, cutout):
    m = _manifest(mix, cutout)
    path = str(tmp_path / "store")
    recs = list(_records(m))
    with LabelStoreWriter(path, m, commit_every=2) as w:
        for r in recs:
            w.write(r)
    store = open_label_store(path)
    assert isinstance(store, LabelStore)
    assert store.num_batches == m["planned_batches"] == 6 and store.batches_per_epoch == 3
    for r in recs:
        _same(store.read(r.batch_id), r)
    assert store.read(2).batch_size == 2  # 10 images, batch 4: the short last batch keeps its size
    assert store.epoch_image_order(1).tolist() == _orders()[1]
    assert store.nbytes() > m["planned_batches"] * BATCH * CLASSES * 2
    with pytest.raises(IndexError):
        store.read(6)


def test_reader_never_sees_uncommitted_batches_and_resume_is_identical(tmp_path):
    m = _manifest("cutmix")
    recs = list(_records(m))
    full = str(tmp_path / "full")
    with LabelStoreWriter(full, m) as w:
        for r in recs:
            w.write(r)

    part = str(tmp_path / "part")
    w = LabelStoreWriter(part, m, commit_every=2)
    for r in recs[:3]:
        w.write(r)
    # batch 2 is written to the maps but not committed: a crash now (no close) hides it
    assert open_label_store(part).num_batches == 2
    del w
    w = LabelStoreWriter(part, m, commit_every=2)  # restart: continues after the last commit
    assert w.next_id == 2
    for r in recs[2:]:
        w.write(r)
    w.close()
    for name in sorted(os.listdir(full)):
        with open(os.path.join(full, name), "rb") as a, open(os.path.join(part, name), "rb") as b:
            assert a.read() == b.read(), name


def test_writer_refuses_other_settings(tmp_path):
    path = str(tmp_path / "s")
    LabelStoreWriter(path, _manifest()).close()
    with pytest.raises(StoreMismatchError, match="batch_size"):
        LabelStoreWriter(path, {**_manifest(), "batch_size": 5})
    LabelStoreWriter(path, {**_manifest(), "batch_size": 5}, overwrite=True).close()
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "x.txt").write_text("x")
    for overwrite in (False, True):  # a folder that is not a store is never replaced
        with pytest.raises(FileExistsError):
            LabelStoreWriter(str(tmp_path / "other"), _manifest(), overwrite=overwrite)
        with pytest.raises(FileExistsError):
            writer_for("authors", str(tmp_path / "other"), _manifest(), overwrite=overwrite)
    assert (tmp_path / "other" / "x.txt").read_text() == "x"


@pytest.mark.parametrize("mix,cutout", [("cutmix", False), ("none", True), ("mixup", False)])
def test_authors_format_round_trip(tmp_path, mix, cutout):
    m = _manifest(mix, cutout)
    recs = list(_records(m))
    ours = str(tmp_path / "ours")
    with LabelStoreWriter(ours, m) as w:
        for r in recs:
            w.write(r)
    theirs = convert(ours, str(tmp_path / "authors"), to="authors", progress=False)
    assert sorted(os.listdir(theirs)) == ["epoch_0", "epoch_1", "lpld_checksums.tsv", "lpld_manifest.json",
                                         "sampler_indices_epoch.json"]
    store = open_label_store(theirs)
    assert isinstance(store, AuthorsLabelStore) and store.num_batches == 6
    for r in recs:
        _same(store.read(r.batch_id), r)
    back = convert(theirs, str(tmp_path / "back"), to="ours", progress=False)
    for name in sorted(os.listdir(ours)):
        if name.endswith(".npy"):
            assert np.array_equal(np.load(os.path.join(ours, name)), np.load(os.path.join(back, name))), name
    assert LabelStore(back).manifest["num_images"] == NUM_IMAGES


def _authors_loader_view(fkd_path, batch_idx_across_epochs, batch_size):
    """What the authors' train_FKD_label_pruning_batch.py reads (re-stated, not their code):
    batch size from the flip tensor of epoch_0's first file, epoch/batch from the global id,
    config[:2] per image, config[2:] = (mix_index, lam, bbox, soft_label); images from the json."""
    names = sorted(os.listdir(os.path.join(fkd_path, "epoch_0")), key=lambda s: int(s[6:-4]))
    first = torch.load(os.path.join(fkd_path, "epoch_0", names[0]))
    last = torch.load(os.path.join(fkd_path, "epoch_0", names[-1]))
    num_img = first[1].size()[0] * (len(names) - 1) + last[1].size()[0]
    per_epoch = -(-num_img // batch_size)
    epoch, b = divmod(batch_idx_across_epochs, per_epoch)
    config = torch.load(os.path.join(fkd_path, f"epoch_{epoch}", f"batch_{b}.tar"))
    with open(os.path.join(fkd_path, "sampler_indices_epoch.json")) as f:
        indices = {int(k): v for k, v in json.load(f).items()}
    return config, indices[epoch][b * batch_size:(b + 1) * batch_size], num_img


def test_authors_loader_reads_what_we_write(tmp_path):
    m = _manifest("cutmix")
    recs = list(_records(m))
    w = writer_for("authors", str(tmp_path / "a"), m)
    for r in recs:
        w.write(r)
    w.close()
    for r in recs:
        config, images, num_img = _authors_loader_view(str(tmp_path / "a"), r.batch_id, BATCH)
        assert num_img == NUM_IMAGES and len(config) == 6
        coords, flips, mix_index, lam, bbox, soft = config
        assert torch.equal(coords, r.crops) and torch.equal(flips, r.flips) and flips.dtype == torch.bool
        assert torch.equal(mix_index, r.mix_index) and lam == r.mix_lam and list(bbox) == list(r.mix_bbox)
        assert soft.dtype == torch.float16 and torch.equal(soft, r.logits)
        assert images == r.image_indices.tolist()


def test_reads_authors_numpy_scalars_and_partial_folders(tmp_path):
    """Their files hold numpy ints in the bbox and a float lam; the last epoch may be partial."""
    root = tmp_path / "fkd"
    orders = _orders()
    for gid, rec in enumerate(list(_records(_manifest("cutmix")))[:5]):
        e, b = divmod(gid, 3)
        (root / f"epoch_{e}").mkdir(parents=True, exist_ok=True)
        bbox = [np.int64(v) for v in rec.mix_bbox]
        torch.save([rec.crops, rec.flips, rec.mix_index, np.float64(rec.mix_lam).item(), bbox, rec.logits],
                   str(root / f"epoch_{e}" / f"batch_{b}.tar"))
    (root / "sampler_indices_epoch.json").write_text(json.dumps({"0": orders[0], "1": orders[1][:8]}))
    store = open_label_store(str(root))
    assert store.num_batches == 5 and store.batch_size == BATCH and store.num_classes == CLASSES
    rec = store.read(4)
    assert rec.mix_bbox == tuple(int(v) for v in list(_records(_manifest("cutmix")))[4].mix_bbox)
    assert rec.image_indices.tolist() == orders[1][4:8]
    os.remove(root / "sampler_indices_epoch.json")
    with pytest.raises(FileNotFoundError, match="did not finish"):
        open_label_store(str(root))


def test_check_compatible_errors(tmp_path):
    path = str(tmp_path / "s")
    with LabelStoreWriter(path, _manifest()) as w:
        for r in _records(_manifest()):
            w.write(r)
    store = LabelStore(path)
    check_compatible(store, num_images=NUM_IMAGES, num_classes=CLASSES, batch_size=BATCH)
    with pytest.raises(StoreMismatchError, match="batch size 4"):
        check_compatible(store, batch_size=8)
    with pytest.raises(StoreMismatchError, match="6 classes"):
        check_compatible(store, num_classes=1000)
    with pytest.raises(StoreMismatchError, match="10 images"):
        check_compatible(store, num_images=9)


def test_store_reads_in_dataloader_workers(tmp_path):
    path = str(tmp_path / "s")
    recs = list(_records(_manifest()))
    with LabelStoreWriter(path, _manifest()) as w:
        for r in recs:
            w.write(r)
    store = LabelStore(path)
    store.read(0)  # maps opened in the parent; workers must reopen their own

    class Batches(torch.utils.data.Dataset):
        def __len__(self):
            return store.num_batches

        def __getitem__(self, k):
            return store.read(k).logits

    loader = torch.utils.data.DataLoader(Batches(), batch_size=None, num_workers=2)
    for k, logits in enumerate(loader):
        assert torch.equal(logits, recs[k].logits)


def test_plan_batches_matches_authors():
    assert plan_batches(10, 4, 2, 0.0) == (3, 6, False)  # ceil without pruning
    assert plan_batches(10, 4, 2, 0.5) == (2, 2, True)   # drop_last with pruning
    assert plan_batches(1000, 128, 300, 0.75) == (7, int(300 * 7 * 0.25), True)
    with pytest.raises(ValueError):
        plan_batches(10, 4, 2, 1.0)


# --- top-k labels and regenerated augmentation ---------------------------------------------------------
def _topk_manifest(k=3, codec="float16", augmentation="recorded", classes=CLASSES):
    return {**_manifest(), "num_classes": classes, "label_topk": k, "label_codec": codec,
            "augmentation": augmentation, "min_scale_crops": 0.08, "max_scale_crops": 1.0,
            "mixup_alpha": 0.8, "cutmix_alpha": 1.0}


@pytest.mark.parametrize("codec", ["float16", "uint8"])
def test_topk_store_round_trip(tmp_path, codec):
    """Full logits handed to a top-k store keep their k largest: fp16 exactly as select_topk casts them,
    8-bit codes within half a code step of the row's range; the checksums cover the new arrays."""
    from lpld.labels.topk import select_topk
    m = _topk_manifest(codec=codec)
    records = list(_records(m))
    with LabelStoreWriter(str(tmp_path / "s"), m, resume=False) as w:
        for rec in records:
            w.write(rec)
    store = open_label_store(str(tmp_path / "s"))
    assert store.manifest["topk_index_dtype"] == "int16" and store.manifest["label_codec"] == codec
    names = {f[:-4] for f in os.listdir(store.path) if f.endswith(".npy")}
    assert ("topk_codes" in names) == (codec == "uint8") and "logits" not in names and "checksums" in names
    for rec in records:
        got = store.read(rec.batch_id)
        values, indices = select_topk(rec.logits.float(), 3, values_dtype=torch.float32)
        assert torch.equal(got.topk_indices, indices) and got.topk_indices.dtype == torch.int16
        assert torch.equal(got.crops, rec.crops) and torch.equal(got.image_indices, rec.image_indices)
        if codec == "float16":
            assert torch.equal(got.logits, values.half())
        else:
            half_step = (values.amax(1) - values.amin(1)) / 255 / 2
            assert bool(((got.logits - values).abs() <= half_step[:, None] + 1e-3).all())
    codes = np.load(os.path.join(store.path, ("topk_codes" if codec == "uint8" else "topk_values") + ".npy"),
                    mmap_mode="r+")
    codes[2, 0, 0] = codes[2, 0, 0] ^ 1 if codec == "uint8" else codes[2, 0, 0] + 1  # the checksum says so
    codes.flush()
    del codes
    assert open_label_store(str(tmp_path / "s")).verify() == [2]


def test_class_indices_are_int32_beyond_int16():
    from lpld.labels.store import array_specs
    for classes, dtype in ((10450, np.int16), (32767, np.int16), (32768, np.int32)):
        specs = array_specs({**_topk_manifest(classes=classes), "checksums": "crc32"})
        assert specs["topk_indices"][1] == np.dtype(dtype), classes


def test_regenerated_store_keeps_no_augmentation_and_checks_digests(tmp_path):
    """A regenerated store holds labels and one digest per batch; reading needs the images' sizes and
    draws the recorded augmentation again; a tampered digest is a one-line error naming batch and store."""
    from lpld.labels.regen import AugmentationDriftError
    m = {**_topk_manifest(augmentation="regenerated"), "seed": 42}
    from lpld.augment import sampler_orders
    orders = sampler_orders(NUM_IMAGES, 42, EPOCHS)
    sizes = [(9 + i, 7) for i in range(NUM_IMAGES)]
    records = []
    with LabelStoreWriter(str(tmp_path / "r"), m, resume=False) as w:
        for gid in range(m["planned_batches"]):
            epoch, index = divmod(gid, m["batches_per_epoch"])
            idx = orders[epoch, index * BATCH:(index + 1) * BATCH].tolist()
            rec = sample_batch_params(gid, idx, [sizes[i] for i in idx], seed=42, size=8, mix_type="cutmix")
            rec.logits = torch.randn(len(idx), CLASSES)
            records.append(rec)
            w.write(rec)
    store = open_label_store(str(tmp_path / "r"))
    names = {f[:-4] for f in os.listdir(store.path) if f.endswith(".npy")}
    assert names == {"topk_values", "topk_indices", "batch_sizes", "aug_digest", "checksums"}
    assert store.manifest["aug_digest"] == "sha256-64/lpld-augmentation-v1"
    with pytest.raises(StoreMismatchError, match="open it together with its image folder"):
        store.read(0)
    assert store.epoch_image_order(1).tolist() == orders[1, :store.batches_per_epoch * BATCH].tolist()
    store.attach_images(sizes)
    for rec in records:
        got = store.read(rec.batch_id)
        for name in ("image_indices", "crops", "flips", "mix_index"):
            assert torch.equal(getattr(got, name), getattr(rec, name)), name
        assert got.mix_lam == rec.mix_lam and got.mix_bbox == rec.mix_bbox
    store.attach_images([(s[0] + 1, s[1]) for s in sizes])  # other images: other crops
    with pytest.raises(AugmentationDriftError) as err:
        store.read(1)
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith(f"batch 1 in label store {store.path}")
    assert "another torch version or device" in msg and "(relabel: torch" not in msg  # no versions recorded
    store.attach_images(sizes)
    digest = np.load(os.path.join(store.path, "aug_digest.npy"), mmap_mode="r+")
    digest[3, 0] ^= 1
    digest.flush()
    del digest
    assert open_label_store(str(tmp_path / "r")).verify() == [3]  # the checksum covers the digest too


def test_full_store_bytes_counts_what_a_full_store_writes(tmp_path):
    """label_bytes_full (final.json) is what a prune-0, all-class, recorded store really takes on disk."""
    from lpld.labels.store import full_store_bytes
    m = {**_manifest(prune=0.5), "label_topk": 2, "label_codec": "uint8"}
    full = {**_manifest(), "checksums": "crc32"}
    with LabelStoreWriter(str(tmp_path / "f"), full, resume=False) as w:
        for rec in _records(full):
            w.write(rec)
    on_disk = open_label_store(str(tmp_path / "f")).nbytes()
    assert abs(full_store_bytes(m) - on_disk) <= 64  # the manifest's own keys differ by a few bytes
