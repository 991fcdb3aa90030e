"""The real Tiny-ImageNet validation split, read by lpld.data.TinyImageNet and staged by
experiments/tiny_imagenet/stage_data.sh (skipped when ../shared/data/tiny-imagenet-200 is absent)."""
from __future__ import annotations

import hashlib
import os
import subprocess
import tarfile
from collections import Counter

import pytest

from conftest import REPO, TINY_SHARED

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


def test_stage_script_verifies_and_is_idempotent(tmp_path):
    script = os.path.join(REPO, "experiments", "tiny_imagenet", "stage_data.sh")
    target = str(tmp_path / "staged")
    first = subprocess.run(["bash", script, target, "val"], capture_output=True, text=True,
                           env={**os.environ, "TINY_SRC": TINY_SHARED})
    assert first.returncode == 0, first.stderr
    assert "staged val" in first.stdout and "10000 val images" in first.stdout
    second = subprocess.run(["bash", script, target, "val"], capture_output=True, text=True,
                            env={**os.environ, "TINY_SRC": TINY_SHARED})
    assert second.returncode == 0 and "already staged" in second.stdout
    # a corrupt copy of a shard is refused before anything is unpacked
    bad_src = tmp_path / "bad"
    bad_src.mkdir()
    for name in ("SHA256SUMS", "wnids.txt", "words.txt"):
        os.symlink(os.path.join(TINY_SHARED, name), bad_src / name)
    (bad_src / "train-1.tar.gz").write_bytes(b"not a tarball")
    bad = subprocess.run(["bash", script, str(tmp_path / "other"), "train-1"], capture_output=True, text=True,
                         env={**os.environ, "TINY_SRC": str(bad_src)})
    assert bad.returncode == 3 and "checksum mismatch" in bad.stderr
    assert not os.path.exists(tmp_path / "other" / "train")
