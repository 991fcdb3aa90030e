"""The real Tiny-ImageNet validation split, read by lpld.data.TinyImageNet (skipped when
../shared/data/tiny-imagenet-200 is absent)."""
from __future__ import annotations

import hashlib
import os
import tarfile
from collections import Counter

import pytest

from conftest import TINY_SHARED

pytestmark = [pytest.mark.realdata,
              pytest.mark.skipif(not os.path.isfile(os.path.join(TINY_SHARED, "val.tar.gz")),
                                 reason=f"real Tiny-ImageNet not found at {TINY_SHARED}")]


def _sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


@pytest.fixture(scope="module")
def tiny_val_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny")
    sums = dict(line.split()[::-1] for line in open(os.path.join(TINY_SHARED, "SHA256SUMS")) if line.strip())
    for name in ("val.tar.gz", "wnids.txt"):
        assert _sha256(os.path.join(TINY_SHARED, name)) == sums[name], f"{name} does not match SHA256SUMS"
    with tarfile.open(os.path.join(TINY_SHARED, "val.tar.gz")) as tar:
        if hasattr(tarfile, "data_filter"):  # Python >= 3.12 / recent 3.10-3.11 patch releases
            tar.extractall(root, filter="data")
        else:
            tar.extractall(root)
    with open(os.path.join(TINY_SHARED, "wnids.txt")) as src, open(root / "wnids.txt", "w") as dst:
        dst.write(src.read())
    return str(root)


def test_val_split_has_10000_images_of_200_classes(tiny_val_root):
    from lpld.data import TinyImageNet
    ds = TinyImageNet(tiny_val_root, "val")
    wnids = sorted(line.strip() for line in open(os.path.join(tiny_val_root, "wnids.txt")) if line.strip())
    assert len(ds) == 10000 and len(ds.classes) == 200 and ds.classes == wnids
    assert Counter(ds.targets) == {c: 50 for c in range(200)}
    # labels agree with val_annotations.txt and with the sorted wnids.txt order
    ann = {}
    for line in open(os.path.join(tiny_val_root, "val", "val_annotations.txt")):
        parts = line.split()
        if parts:
            ann[parts[0]] = parts[1]
    for path, target in ds.samples[::97]:
        assert wnids[target] == ann[os.path.basename(path)]
    img, target = ds[0]
    assert img.size == (64, 64) and img.mode == "RGB" and 0 <= target < 200


def test_a_class_subset_of_the_val_split_keeps_its_annotated_labels(tiny_val_root):
    from lpld.data import build_val_dataset
    wnids = sorted(line.strip() for line in open(os.path.join(tiny_val_root, "wnids.txt")) if line.strip())
    ann = dict(line.split()[:2] for line in open(os.path.join(tiny_val_root, "val", "val_annotations.txt"))
               if line.strip())
    ds = build_val_dataset("tiny", tiny_val_root, None, "20:40")
    assert ds.classes == wnids[20:40] and len(ds) == 1000 and Counter(ds.targets) == {c: 50 for c in range(20)}
    assert all(ds.classes[t] == ann[os.path.basename(p)] for p, t in ds.samples)
