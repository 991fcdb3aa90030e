"""Dataset layouts and the errors a wrong path or layout produces."""
import os

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import transforms as T

from lpld.data import ImageFolder, TinyImageNet, build_dataset, make_demo_dataset, normalization, val_transform

WNIDS = ["n02", "n01", "n03"]  # deliberately unsorted in wnids.txt


def _img(path, value):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(np.full((8, 8, 3), value, np.uint8)).save(path)


@pytest.fixture
def mini_tiny(tmp_path):
    root = tmp_path / "tiny-imagenet-200"
    root.mkdir()
    (root / "wnids.txt").write_text("\n".join(WNIDS) + "\n")
    for w in WNIDS:
        for k in range(3):
            _img(str(root / "train" / w / "images" / f"{w}_{k}.JPEG"), 10 * k)
        (root / "train" / w / f"{w}_boxes.txt").write_text("")
    lines = []
    for i, w in enumerate(["n03", "n01", "n02", "n01"]):
        _img(str(root / "val" / "images" / f"val_{i}.JPEG"), i)
        lines.append(f"val_{i}.JPEG\t{w}\t0\t0\t63\t63")
    (root / "val" / "val_annotations.txt").write_text("\n".join(lines) + "\n")
    return str(root)


def test_tiny_layout_labels_follow_sorted_wnids(mini_tiny):
    train = TinyImageNet(mini_tiny, "train")
    val = TinyImageNet(mini_tiny, "val")
    assert train.classes == val.classes == ["n01", "n02", "n03"]
    assert len(train) == 9 and sorted(set(train.targets)) == [0, 1, 2]
    assert all(os.path.basename(p).startswith(train.classes[t]) for p, t in train.samples)
    assert val.targets == [2, 0, 1, 0]
    img, label = val[0]
    assert img.size == (8, 8) and label == 2


def test_tiny_errors_name_the_path(mini_tiny, tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        TinyImageNet(str(tmp_path / "nowhere"), "train")
    os.remove(os.path.join(mini_tiny, "wnids.txt"))
    with pytest.raises(FileNotFoundError, match="wnids.txt"):
        TinyImageNet(mini_tiny, "train")


def test_tiny_missing_class_folder_and_bad_annotation(mini_tiny):
    import shutil
    shutil.rmtree(os.path.join(mini_tiny, "train", "n02", "images"))
    with pytest.raises(FileNotFoundError, match=r"n02.*images"):
        TinyImageNet(mini_tiny, "train")
    ann = os.path.join(mini_tiny, "val", "val_annotations.txt")
    with open(ann, "a") as f:
        f.write("val_9.JPEG\tn99\t0\t0\t1\t1\n")
    with pytest.raises(ValueError, match=r"val_annotations.txt:5"):
        TinyImageNet(mini_tiny, "val")


def test_image_folder_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="found nothing"):
        ImageFolder(str(tmp_path / "missing"))
    (tmp_path / "flat").mkdir()
    with pytest.raises(FileNotFoundError, match="no sub-folders"):
        ImageFolder(str(tmp_path / "flat"))
    (tmp_path / "flat" / "new000").mkdir()
    with pytest.raises(FileNotFoundError, match=r"new000 holds no images"):
        ImageFolder(str(tmp_path / "flat"))


def test_unreadable_image_names_the_file(tmp_path):
    _img(str(tmp_path / "f" / "new000" / "class000_id000.jpg"), 3)
    bad = tmp_path / "f" / "new001" / "class001_id000.jpg"
    bad.parent.mkdir()
    bad.write_bytes(b"not a jpeg")
    ds = ImageFolder(str(tmp_path / "f"))
    assert ds.classes == ["new000", "new001"]
    ds[0]
    with pytest.raises(RuntimeError, match="class001_id000.jpg"):
        ds[1]


def test_demo_dataset_is_deterministic(tmp_path):
    a = make_demo_dataset(str(tmp_path / "a"), num_classes=3, image_size=12, train_per_class=4, val_per_class=2)
    b = make_demo_dataset(str(tmp_path / "b"), num_classes=3, image_size=12, train_per_class=4, val_per_class=2)
    da, db = build_dataset("imagefolder", a, "train"), build_dataset("imagefolder", b, "train")
    assert len(da) == 12 and len(build_dataset("imagefolder", a, "val")) == 6
    for (pa, _), (pb, _) in zip(da.samples, db.samples):
        assert open(pa, "rb").read() == open(pb, "rb").read()
    # Re-running with the same settings is a no-op; other settings are refused.
    make_demo_dataset(a, num_classes=3, image_size=12, train_per_class=4, val_per_class=2)
    with pytest.raises(FileExistsError, match="other settings"):
        make_demo_dataset(a, num_classes=4, image_size=12, train_per_class=4, val_per_class=2)
    assert not [d for d in os.listdir(tmp_path) if d.endswith(".tmp")]


def test_tiny_validation_resize_and_centre_crop_are_a_no_op_at_64_px():
    """The authors validate Tiny-ImageNet with ToTensor + Normalize only; ours adds Resize(64) +
    CenterCrop(64) (so other image sizes also work), which leaves the 64 px images untouched."""
    img = Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8))
    authors = T.Compose([T.ToTensor(), T.Normalize(*normalization("tiny"))])
    assert torch.equal(val_transform(64, "tiny")(img), authors(img))
