"""End to end on the demo data: teacher -> soft labels (the relabel stage's run_relabel) for a few
images per class -> pruned labels -> student, which must beat chance by a wide margin on the real
validation images."""
from __future__ import annotations

import json
import os
import shutil

import pytest
import torch
from torch.utils.data import DataLoader

from lpld.data import ImageFolder, make_demo_dataset, train_transform, val_transform
from lpld.engine import evaluate
from lpld.labels import open_label_store
from lpld.models import build_model
from lpld.relabel.generate import run_relabel
from lpld.validate import run_validate

pytestmark = pytest.mark.usefixtures("one_thread")

CLASSES, SIZE, PER_CLASS = 4, 16, 4
ARCH = "timm/test_resnet"  # teacher and student: a 0.4 M-parameter ResNet learns these images as well


def train_teacher(root: str, epochs: int = 8) -> torch.nn.Module:
    torch.manual_seed(0)
    model = build_model(ARCH, CLASSES)
    data = ImageFolder(os.path.join(root, "train"), train_transform(SIZE, "demo"))
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-4)
    loader = DataLoader(data, batch_size=24, shuffle=True, generator=torch.Generator().manual_seed(0))
    for _ in range(epochs):
        model.train()
        for x, y in loader:
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
    return model.eval()


def test_student_learns_from_pruned_soft_labels(tmp_path):
    root = make_demo_dataset(str(tmp_path / "demo"), num_classes=CLASSES, image_size=SIZE,
                             train_per_class=30, val_per_class=15, seed=0)
    teacher = train_teacher(root)
    val = DataLoader(ImageFolder(os.path.join(root, "val"), val_transform(SIZE, "demo")), batch_size=64)
    teacher_top1 = evaluate(teacher, val, torch.device("cpu"), progress=False)["top1"]
    assert teacher_top1 > 60

    distilled = tmp_path / "distilled"  # stand-in for recovered images: a few real ones per class
    for c in sorted(os.listdir(os.path.join(root, "train"))):
        (distilled / c).mkdir(parents=True)
        for f in sorted(os.listdir(os.path.join(root, "train", c)))[:PER_CLASS]:
            shutil.copy(os.path.join(root, "train", c, f), distilled / c / f)
    epochs = 30
    # no mixing (the authors' Tiny-ImageNet setting); crops of at least 30% of a 16 px image
    labels = run_relabel(dict(dataset="demo", train_dir=str(distilled), output_dir=str(tmp_path / "labels"),
                              num_classes=CLASSES, batch_size=8, epochs=epochs, input_size=SIZE,
                              mix_type="none", min_scale_crops=0.3, workers=0, device="cpu", progress=False,
                              model=ARCH),
                         teacher=teacher)
    store = open_label_store(labels)
    result = run_validate(dict(
        dataset="demo", model=ARCH, train_dir=str(distilled), label_dir=store.path,
        val_dir=os.path.join(root, "val"), batch_size=8, epochs=epochs, workers=0, temperature=4.0, adamw_lr=0.002, cos=True,
        prune_ratio=0.5, granularity="batch_to_epoch", val_interval=10, checkpoint_interval=100,
        output_dir=str(tmp_path / "out"), progress=False, seed=0))
    chance = 100.0 / CLASSES
    assert result["top1"] >= 2 * chance, result  # 16 distilled images, half the labels
    assert result["label_batches_used"] <= store.num_batches // 2
    final = json.load(open(tmp_path / "out" / "final.json"))
    assert final["top1"] == result["top1"] and os.path.isfile(tmp_path / "out" / "checkpoint.pth")
