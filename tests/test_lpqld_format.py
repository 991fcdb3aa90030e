"""The flat LPQLD label layout: their files read as BatchRecords, our writer round-trips, clear errors."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch
from PIL import Image

from lpld.augment import apply_views, sample_batch_params
from lpld.labels.common import StoreMismatchError
from lpld.labels.lpqld_format import (SAMPLER_JSON, LPQLDLabelStore, LPQLDStoreWriter, infer_batches_per_epoch,
                                      is_lpqld_store)
from lpld.labels.topk import select_topk
from lpld.utils.safe_load import safe_torch_load

B, C, K, SIZE = 8, 50, 5, 224


def _records(count, *, images=20, mix="cutmix", cutout=False, topk=K, seed=0):
    """Records the way relabel makes them: epochs are permutations of ``images``, drop_last."""
    per_epoch = images // B
    gen = torch.Generator().manual_seed(seed)
    orders = [torch.randperm(images, generator=gen).tolist() for _ in range(count // per_epoch + 1)]
    out = []
    for gid in range(count):
        epoch, index = divmod(gid, per_epoch)
        idx = orders[epoch][index * B:(index + 1) * B]
        rec = sample_batch_params(gid, idx, [(SIZE + 3 * i, SIZE) for i in idx], seed=seed, size=SIZE,
                                  cutout=cutout, mix_type=mix)
        logits = torch.randn(B, C, generator=gen) * 5
        if topk is None:
            rec.logits = logits.half()
        else:
            rec.logits, rec.topk_indices = select_topk(logits, topk)
        out.append(rec)
    return out, per_epoch


def _manifest(count, per_epoch, mix="cutmix", cutout=False, topk=K):
    return {"dataset": "imagenet", "seed": 0, "batch_size": B, "epochs": 3, "batches_per_epoch": per_epoch,
            "planned_batches": count, "prune_ratio": 0.0, "mix_type": mix, "num_classes": C, "num_images": 20,
            "image_size": SIZE, "cutout": cutout, "logits_dtype": "float16", "label_topk": topk}


def _write(path, records, manifest, **kw):
    with LPQLDStoreWriter(str(path), manifest, **kw) as w:
        for rec in records:
            w.write(rec)
    return str(path)


@pytest.mark.parametrize("mix,cutout,topk", [("cutmix", False, K), ("mixup", False, K), ("none", True, K),
                                             ("cutmix", False, None)])
def test_roundtrip(tmp_path, mix, cutout, topk):
    records, per_epoch = _records(6, mix=mix, cutout=cutout, topk=topk)
    path = _write(tmp_path / "labels", records, _manifest(6, per_epoch, mix, cutout, topk))
    assert is_lpqld_store(path)
    names = [f"batch_{i}.tar" for i in range(6)] + [SAMPLER_JSON, "lpld_manifest.json"]
    assert sorted(os.listdir(path)) == sorted(names)
    store = LPQLDLabelStore(path)
    assert (len(store), store.batch_size, store.num_classes, store.batches_per_epoch) == (6, B, C, per_epoch)
    assert store.manifest["label_topk"] == topk and store.manifest["mix_type"] == mix
    for rec in records:
        got = store.read(rec.batch_id)
        assert torch.equal(got.image_indices, rec.image_indices)
        assert torch.equal(got.crops, rec.crops.half().float())  # their coords are fp16
        assert torch.equal(got.logits, rec.logits) and got.logits.dtype == torch.float16
        if topk is None:
            assert got.topk_indices is None
        else:
            assert torch.equal(got.topk_indices, rec.topk_indices) and got.topk_indices.dtype == torch.int16
            assert got.label_topk == topk
        for name in ("flips", "cutout", "mix_index"):
            a, b = getattr(got, name), getattr(rec, name)
            assert (a is None and b is None) or torch.equal(a, b), name
        assert got.mix_lam == rec.mix_lam and got.mix_bbox == rec.mix_bbox
    second_epoch = records[per_epoch:2 * per_epoch]
    assert torch.equal(store.epoch_image_order(1), torch.cat([r.image_indices for r in second_epoch]))


def test_fp16_coords_replay_the_same_views(tmp_path):
    """Their fp16 crop fractions give the very pixel boxes of the float32 ones, so the replayed
    views are identical."""
    records, per_epoch = _records(1, mix="none")
    rec = records[0]
    path = _write(tmp_path / "l", records, _manifest(1, per_epoch, "none"))
    got = LPQLDLabelStore(path).read(0)
    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 256, (SIZE, SIZE + 3 * int(i), 3), dtype=np.uint8))
              for i in rec.image_indices]
    a = apply_views(images, rec.crops, rec.flips, None, 32, None, None)
    b = apply_views(images, got.crops, got.flips, None, 32, None, None)
    assert torch.equal(a, b)


def test_reads_files_as_their_generator_writes_them(tmp_path):
    """Built as generate_soft_label_pruning_batch.py does (numpy box corners as uint8 tensors, a
    Python float lambda, json keyed by the global batch id), no lpld metadata."""
    gen = torch.Generator().manual_seed(3)
    images, per_epoch = 20, 2
    orders = [torch.randperm(images, generator=gen).tolist() for _ in range(3)]
    sampler = {}
    for gid in range(5):
        e, i = divmod(gid, per_epoch)
        idx = orders[e][i * B:(i + 1) * B]
        out = torch.randn(B, C, generator=gen)
        top = torch.topk(out, K, dim=1)
        bbox = [torch.tensor(v, dtype=torch.uint8) for v in (np.int64(3), np.int64(10), np.int64(90), np.int64(200))]
        config = [torch.rand(B, 4, generator=gen).half(), torch.rand(B, generator=gen) < 0.5,
                  torch.randperm(B, generator=gen).to(torch.uint8), 0.3, bbox, top.values.half(),
                  top.indices.short()]
        torch.save(config, tmp_path / f"batch_{gid}.tar")
        sampler[str(gid)] = idx
    (tmp_path / SAMPLER_JSON).write_text(json.dumps(sampler))
    with pytest.raises(ValueError, match="pass num_classes"):
        LPQLDLabelStore(str(tmp_path))
    store = LPQLDLabelStore(str(tmp_path), num_classes=C)
    assert store.batches_per_epoch == per_epoch  # inferred from the image lists
    rec = store.read(4)
    assert rec.mix_bbox == (3, 10, 90, 200) and rec.mix_lam == 0.3 and rec.mix_index.dtype == torch.int64
    assert rec.image_indices.tolist() == sampler["4"] and rec.logits.shape == (B, K)
    with pytest.raises(ValueError, match="label_topk must be in 1..3"):
        LPQLDLabelStore(str(tmp_path), num_classes=3)


def test_missing_files_are_named(tmp_path):
    records, per_epoch = _records(4)
    path = _write(tmp_path / "l", records, _manifest(4, per_epoch))
    os.remove(os.path.join(path, "batch_2.tar"))
    with pytest.raises(FileNotFoundError, match=r"batch_2\.tar is missing \(1 of the 4 batches"):
        LPQLDLabelStore(path)
    os.remove(os.path.join(path, SAMPLER_JSON))
    with pytest.raises(FileNotFoundError, match=f"{SAMPLER_JSON} is missing"):
        LPQLDLabelStore(path)


def test_rejects_randaug_and_foreign_files(tmp_path):
    config = [torch.zeros(B, 4).half(), torch.zeros(B, dtype=torch.bool), [[torch.zeros(B)]], None, None, None,
              torch.zeros(B, C).half()]
    torch.save(config, tmp_path / "batch_0.tar")
    (tmp_path / SAMPLER_JSON).write_text(json.dumps({"0": list(range(B))}))
    with pytest.raises(ValueError, match="RandAugment"):
        LPQLDLabelStore(str(tmp_path))
    torch.save([torch.zeros(B, 4)], tmp_path / "batch_0.tar")
    with pytest.raises(ValueError, match="1 entries; expected the LPQLD layout"):
        LPQLDLabelStore(str(tmp_path))


def test_writer_resumes_after_listed_batches_and_checks(tmp_path):
    records, per_epoch = _records(5)
    manifest = _manifest(5, per_epoch)
    w = LPQLDStoreWriter(str(tmp_path / "l"), manifest, commit_every=2)
    for rec in records[:3]:
        w.write(rec)  # batch 2 is on disk but the json lists 0..1 (the "crash" before a commit)
    resumed = LPQLDStoreWriter(str(tmp_path / "l"), manifest)
    assert resumed.next_id == 2
    for rec in records[2:]:
        resumed.write(rec)
    resumed.close()
    straight = _write(tmp_path / "s", records, manifest)
    for i in range(5):
        assert open(os.path.join(straight, f"batch_{i}.tar"), "rb").read() == \
            open(tmp_path / "l" / f"batch_{i}.tar", "rb").read()
    with pytest.raises(StoreMismatchError, match="label_topk"):
        LPQLDStoreWriter(str(tmp_path / "l"), {**manifest, "label_topk": 3})
    with pytest.raises(ValueError, match="uint8: batch_size 300"):
        LPQLDStoreWriter(str(tmp_path / "big"), {**manifest, "batch_size": 300})
    with pytest.raises(ValueError, match="uint8: image_size 256"):
        LPQLDStoreWriter(str(tmp_path / "big"), {**manifest, "image_size": 256})
    with pytest.raises(ValueError, match="label_topk must be in 1..50"):
        LPQLDStoreWriter(str(tmp_path / "k"), {**manifest, "label_topk": 0})
    bad = records[0]
    bad.topk_indices = None
    with pytest.raises(ValueError, match="top-5 values and indices"):
        LPQLDStoreWriter(str(tmp_path / "x"), manifest).write(bad)


def test_infer_batches_per_epoch():
    assert infer_batches_per_epoch([[0, 1], [2, 3], [1, 0], [3, 2]]) == 2
    assert infer_batches_per_epoch([[0, 1], [2, 3], [4]]) == 3  # one epoch, no drop_last
    assert infer_batches_per_epoch([[0, 1], [2, 3], [4, 0]]) == 2  # drop_last: image 4 was left out


# --- their folder in our pipeline ------------------------------------------------------------------


def test_lpqld_folder_and_its_conversion_train_identically(demo_root, tmp_path, one_thread):
    """relabel --format lpqld writes their flat layout (MR-2); training reads it directly (their
    random.sample draw) and after convert-labels into our store, with identical weights."""
    from lpld.labels import convert, open_label_store
    from lpld.relabel import run_relabel
    from lpld.relabel.cli import main_convert
    from lpld.validate import run_validate
    train_dir = os.path.join(demo_root, "train")
    torch.manual_seed(1)
    teacher = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.AdaptiveAvgPool2d(1),
                                  torch.nn.Flatten(), torch.nn.Linear(4, 4))
    folder = run_relabel({"dataset": "demo", "train_dir": train_dir, "num_classes": 4, "batch_size": 8, "epochs": 2,
                          "input_size": 16, "mix_type": "cutmix", "output_dir": str(tmp_path / "theirs"),
                          "workers": 0, "progress": False, "device": "cpu", "label_quantization": "MR-2",
                          "format": "lpqld"}, teacher=teacher)
    assert is_lpqld_store(folder) and os.path.isfile(os.path.join(folder, "batch_11.tar"))
    assert main_convert(["--src", folder, "--dst", str(tmp_path / "ours"), "--to", "ours"]) == str(tmp_path / "ours")
    ours = open_label_store(str(tmp_path / "ours"))
    assert ours.manifest["label_topk"] == 2 and ours.read(5).topk_indices.dtype == torch.int16
    convert(folder, str(tmp_path / "ours8"), to="ours", label_codec="uint8", augmentation="regenerated",
            train_dir=train_dir)
    results = {}
    for name, labels in (("theirs", folder), ("ours", str(tmp_path / "ours"))):
        results[name] = run_validate(dict(
            dataset="demo", train_dir=train_dir, label_dir=labels, val_dir=os.path.join(demo_root, "val"),
            batch_size=8, epochs=2, workers=0, output_dir=str(tmp_path / ("v_" + name)), model="timm/test_resnet",
            val_interval=2, progress=False, seed=0, max_steps_per_epoch=3, prune_mode="lpqld",
            temperature=4.0, temp_scheduler="step", temp_step_size=1, temp_step_gamma=0.7, temp_stu_dynamic=1.0))
    a = safe_torch_load(tmp_path / "v_theirs" / "checkpoint.pth", what="checkpoint")
    b = safe_torch_load(tmp_path / "v_ours" / "checkpoint.pth", what="checkpoint")
    for k in a["model"]:
        torch.testing.assert_close(a["model"][k], b["model"][k], rtol=0, atol=0, msg=k)
    assert a["student_temperature"] == b["student_temperature"]
    assert results["theirs"]["label_topk"] == 2 and results["theirs"]["prune_mode"] == "lpqld"
