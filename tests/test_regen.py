"""Regenerated augmentation: equal to what relabel recorded, bound by a digest that drift breaks."""
from __future__ import annotations

import os

import pytest
import torch

from lpld.augment import BatchRecord
from lpld.data import ImageFolder
from lpld.labels import open_label_store
from lpld.labels.regen import (DIGEST_BYTES, AugmentationDriftError, AugmentationRegenerator, augmentation_digest,
                               image_sizes)
from lpld.relabel import run_relabel

FIELDS = ("image_indices", "crops", "flips", "cutout", "mix_index")


def _small_teacher() -> torch.nn.Module:
    torch.manual_seed(1)
    return torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.AdaptiveAvgPool2d(1),
                               torch.nn.Flatten(), torch.nn.Linear(4, 4))


@pytest.fixture(scope="module", params=["cutmix", "mixup"])
def relabelled(request, demo_root, tmp_path_factory):
    """A store written by our relabel: 48 demo images, batches of 8 (one partial per epoch), 2 epochs."""
    train_dir = os.path.join(demo_root, "train")
    out = str(tmp_path_factory.mktemp("regen") / request.param)
    run_relabel({"dataset": "demo", "train_dir": train_dir, "num_classes": 4, "batch_size": 10, "epochs": 2,
                 "input_size": 16, "mix_type": request.param, "output_dir": out, "workers": 0, "progress": False,
                 "device": "cpu"}, teacher=_small_teacher())
    paths = [p for p, _ in ImageFolder(train_dir).samples]
    return open_label_store(out), image_sizes(paths)


def _same(a: BatchRecord, b: BatchRecord) -> None:
    for name in FIELDS:
        x, y = getattr(a, name), getattr(b, name)
        assert (x is None and y is None) or (x.dtype == y.dtype and torch.equal(x, y)), name
    assert a.mix_lam == b.mix_lam and a.mix_bbox == b.mix_bbox and a.batch_id == b.batch_id


def test_regenerated_equals_recorded(relabelled):
    store, sizes = relabelled
    regen = AugmentationRegenerator(store.manifest, sizes)
    assert store.num_batches == 10 and store.manifest["drop_last"] is False  # partial last batches too
    for gid in range(store.num_batches):
        recorded = store.read(gid)
        again = regen.checked_record(gid, augmentation_digest(recorded))
        _same(again, recorded)
        assert again.logits is None


def test_changed_seed_or_settings_fail_loudly(relabelled):
    store, sizes = relabelled
    digests = [augmentation_digest(store.read(g)) for g in range(store.num_batches)]
    assert len(set(digests)) == len(digests) and all(len(d) == DIGEST_BYTES for d in digests)
    for change in ({"seed": store.manifest["seed"] + 1}, {"min_scale_crops": 0.5},
                   {"mix_type": "none"}):
        other = AugmentationRegenerator({**store.manifest, **change}, sizes)
        assert augmentation_digest(other.record(3)) != digests[3], change
        with pytest.raises(AugmentationDriftError, match=r"^batch 3 in s: the regenerated augmentation") as err:
            other.checked_record(3, digests[3], where="s")
        assert "\n" not in str(err.value)
    with pytest.raises(ValueError, match="the labels were made for 48 images"):
        AugmentationRegenerator(store.manifest, sizes[:-1])
    with pytest.raises(ValueError, match="lacks seed"):
        AugmentationRegenerator({**store.manifest, "seed": None}, sizes)


def test_digest_encoding_is_pinned():
    """Stores keep digests: the encoding must not change silently (a new one needs a new tag)."""
    rec = BatchRecord(batch_id=7, image_indices=torch.tensor([3, 1]), crops=torch.tensor([[0.0, 0.25, 0.5, 0.75]] * 2),
                      flips=torch.tensor([True, False]), mix_index=torch.tensor([1, 0]), mix_lam=0.375,
                      mix_bbox=(1, 2, 3, 4), logits=torch.zeros(2, 3))
    digest = augmentation_digest(rec)
    assert digest.hex() == "969a6cd9c9357770"
    rec.logits = torch.ones(2, 3)  # logits are not part of it
    assert augmentation_digest(rec) == digest
    rec.mix_bbox = None  # a mixup record with the same partners and lambda is another augmentation
    assert augmentation_digest(rec) != digest


# --- stores with regenerated augmentation, end to end ------------------------------------------------
@pytest.fixture(scope="module")
def topk_pair(demo_root, tmp_path_factory):
    """The same relabel run written twice: top-2 with recorded augmentation, and top-2 with
    regenerated augmentation and 8-bit values."""
    train_dir = os.path.join(demo_root, "train")
    tmp = tmp_path_factory.mktemp("regen_topk")
    cfg = {"dataset": "demo", "train_dir": train_dir, "num_classes": 4, "batch_size": 10, "epochs": 2,
           "input_size": 16, "mix_type": "cutmix", "workers": 0, "progress": False, "device": "cpu",
           "label_topk": 2}
    rec = run_relabel({**cfg, "output_dir": str(tmp / "rec")}, teacher=_small_teacher())
    regen = run_relabel({**cfg, "output_dir": str(tmp / "regen"), "augmentation": "regenerated"},
                        teacher=_small_teacher())
    return rec, regen, train_dir


def test_regenerated_targets_equal_the_recorded_topk_store(topk_pair):
    """What the trainer receives (views, top-k values and classes, hard targets) is identical."""
    from lpld.data import normalization
    from lpld.validate.loader import BatchRequest, SoftLabelBatches
    rec_path, regen_path, train_dir = topk_pair
    images = ImageFolder(train_dir)
    mean, std = normalization("demo")
    a = SoftLabelBatches(images, rec_path, 16, mean, std, allow_getitems=True)
    b = SoftLabelBatches(images, regen_path, 16, mean, std, allow_getitems=True)
    assert b.store.regenerated and not a.store.regenerated
    for gid in range(a.store.num_batches):
        for request in (BatchRequest(gid), BatchRequest(gid, 1, 2)):
            x, y = a.load_request(request), b.load_request(request)
            for name in ("views", "keep", "soft_logits", "targets", "image_indices", "topk_indices"):
                assert torch.equal(getattr(x, name), getattr(y, name)), (gid, name)
    assert open_label_store(regen_path).nbytes() < open_label_store(rec_path).nbytes()


def test_changed_augmentation_settings_stop_training(topk_pair, demo_root, tmp_path):
    """A store whose settings no longer draw its augmentation (here: an edited crop scale) is a
    one-line error naming the batch and the store, in training as in check-labels."""
    import json
    import shutil

    from lpld.validate import run_validate
    _, regen_path, train_dir = topk_pair
    edited = str(tmp_path / "edited")
    shutil.copytree(regen_path, edited)
    with open(os.path.join(edited, "manifest.json")) as f:
        manifest = json.load(f)
    manifest["min_scale_crops"] = 0.5
    with open(os.path.join(edited, "manifest.json"), "w") as f:
        json.dump(manifest, f)
    with pytest.raises(AugmentationDriftError) as err:
        run_validate(dict(dataset="demo", train_dir=train_dir, label_dir=edited, val_dir=os.path.join(demo_root, "val"),
                          batch_size=10, epochs=2, workers=0, output_dir=str(tmp_path / "v"), model="timm/test_resnet",
                          progress=False, max_steps_per_epoch=1))
    msg = str(err.value)
    assert "\n" not in msg and f"in label store {edited}" in msg and "another torch version or device" in msg
    assert f"(relabel: torch {torch.__version__}" in msg  # the relabel run's versions are named
    from lpld.relabel.cli import main_check
    assert main_check(["--store", edited, "--train-dir", train_dir]) == 1
    assert main_check(["--store", regen_path, "--train-dir", train_dir]) == 0
