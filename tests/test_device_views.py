"""Device-side input path: batched crop/resize/flip/Cutout equal PIL's views, and students and
relabel trained or labelled through it equal the PIL path."""
from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from PIL import Image

from lpld.augment import sample_batch_params, sample_crop_params, sample_cutout, views_uint8
from lpld.data import ImageFolder
from lpld.device_views import ImageBank, cut_views
from lpld.labels import open_label_store
from lpld.utils.safe_load import safe_torch_load
from lpld.validate import run_validate

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("size,height,width", [(16, 16, 16), (64, 64, 70), (32, 50, 41), (24, 20, 90)])
def test_views_equal_pil(size, height, width):
    """Down- and up-scaling crops, both of Pillow's pass orders, flips and Cutout, images of
    different sizes in one padded batch."""
    rng = np.random.default_rng(size)
    gen = torch.Generator().manual_seed(size)
    images = [Image.fromarray(rng.integers(0, 256, (height + k % 3, width - k % 4, 3), dtype=np.uint8))
              for k in range(24)]
    pixels = torch.zeros(len(images), 3, height + 2, width, dtype=torch.uint8)
    for k, img in enumerate(images):
        a = torch.from_numpy(np.array(img)).permute(2, 0, 1)
        pixels[k, :, :a.shape[1], :a.shape[2]] = a
    hw = torch.tensor([[img.size[1], img.size[0]] for img in images])
    crops, flips = sample_crop_params([img.size for img in images], gen)
    assert torch.equal(cut_views(pixels, hw, crops, flips, None, size), views_uint8(images, crops, flips, None, size))
    cutout = sample_cutout(len(images), size, rng)
    assert torch.equal(cut_views(pixels, hw, crops, None, cutout, size), views_uint8(images, crops, None, cutout, size))


def test_bank_replays_stored_records(demo_root):
    images = ImageFolder(os.path.join(demo_root, "train"))
    bank = ImageBank.from_folder(images, torch.device("cpu"), 16)
    assert bank.pixels.is_shared() and bank.pixels.shape == (48, 3, 16, 16)
    from lpld.data import load_rgb
    idx = list(range(0, 48, 3))
    rec = sample_batch_params(0, idx, [bank.image_sizes()[i] for i in idx], seed=1, size=16, mix_type="cutmix")
    pil = views_uint8([load_rgb(images.samples[i][0]) for i in rec.image_indices.tolist()], rec.crops, rec.flips,
                      None, 16)
    assert torch.equal(bank.views(rec), pil)


def test_students_train_the_same_through_either_path(demo_root, tmp_path, make_label_store):
    store = make_label_store(os.path.join(demo_root, "train"), str(tmp_path / "labels"), None, num_classes=4,
                             batch_size=8, epochs=2, mix_type="mixup")
    base = dict(dataset="demo", train_dir=os.path.join(demo_root, "train"), label_dir=store.path,
                val_dir=os.path.join(demo_root, "val"), batch_size=8, epochs=2, train_epochs=1, workers=0,
                max_steps_per_epoch=3, progress=False, seed=0, device="cpu")
    pil = run_validate(base | dict(output_dir=str(tmp_path / "pil")))
    dev = run_validate(base | dict(output_dir=str(tmp_path / "dev"), input_path="device"))
    a = safe_torch_load(tmp_path / "pil" / "checkpoint.pth", what="checkpoint")["model"]
    b = safe_torch_load(tmp_path / "dev" / "checkpoint.pth", what="checkpoint")["model"]
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert pil["val_loss"] == dev["val_loss"]


def test_relabel_through_the_device_path_writes_the_same_store(demo_root, tmp_path):
    from lpld.models import build_model
    from lpld.relabel.generate import run_relabel
    torch.manual_seed(0)
    teacher = build_model("resnet18", 4).eval()
    stores = {}
    for path in ("pil", "device"):
        out = run_relabel(dict(dataset="demo", train_dir=os.path.join(demo_root, "train"), output_dir=str(tmp_path / path),
                               num_classes=4, batch_size=8, epochs=1, input_size=16, mix_type="cutmix", workers=0,
                               device="cpu", progress=False, input_path=path), teacher=teacher)
        stores[path] = open_label_store(out)
    a, b = stores["pil"], stores["device"]
    assert a.num_batches == b.num_batches == 6
    for k in range(a.num_batches):
        ra, rb = a.read(k), b.read(k)
        assert torch.equal(ra.image_indices, rb.image_indices) and torch.equal(ra.logits, rb.logits), k
