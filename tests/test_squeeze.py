"""Squeeze stage on demo data: the teacher learns, resume continues, the class pass keeps accuracy."""
import argparse
import json
import os

import pytest
import torch

from lpld.config import resolve
from lpld.data import make_demo_dataset
from lpld.models import build_model, class_bn_layers, read_state_dict
from lpld.squeeze import CLASS_STATS_SCHEMA, TRAIN_SCHEMA, run_class_stats, run_teacher_training


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("sq") / "demo")
    return make_demo_dataset(root, num_classes=4, image_size=16, train_per_class=40, val_per_class=20, seed=1)


def _cfg(schema, **kw) -> argparse.Namespace:
    base = dict(dataset="demo", model="resnet18", tiny_stem=False, image_size=16, batch_size=32,
                workers=0, device="cpu", amp=False, progress=False)
    return resolve(schema, [("test", {**base, **kw})])


def _train_cfg(demo, out, **kw):
    # make_demo_dataset defaults would differ from the fixture's: point at the existing folder
    return _cfg(TRAIN_SCHEMA, data_path=demo, output_dir=str(out), lr=0.05, weight_decay=5e-4,
                warmup_epochs=1, warmup_start_factor=0.1, **kw)


@pytest.fixture(scope="module")
def teacher(demo, tmp_path_factory):
    out = tmp_path_factory.mktemp("teacher")
    metrics = run_teacher_training(_train_cfg(demo, out, epochs=8))
    return metrics, out


def test_teacher_beats_chance_clearly(teacher):
    metrics, out = teacher
    assert metrics["val_top1"] >= 60.0, metrics  # chance is 25%
    rows = [json.loads(line) for line in open(os.path.join(out, "metrics.jsonl"))]
    assert [r["epoch"] for r in rows] == list(range(1, 9))
    assert set(read_state_dict(metrics["teacher"])) == set(build_model("resnet18", 4).state_dict())


def test_resume_continues_from_saved_epoch(demo, tmp_path):
    run_teacher_training(_train_cfg(demo, tmp_path, epochs=1))
    state = torch.load(tmp_path / "checkpoint.pth", map_location="cpu", weights_only=False)
    assert state["epoch"] == 0
    run_teacher_training(_train_cfg(demo, tmp_path, epochs=2, resume=True))
    rows = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")]
    assert [r["epoch"] for r in rows] == [1, 2]
    assert torch.load(tmp_path / "checkpoint.pth", map_location="cpu", weights_only=False)["epoch"] == 1
    # The warm-up/cosine schedule continued where it stopped rather than restarting.
    assert rows[1]["lr"] == pytest.approx(0.05)


def test_resume_without_checkpoint_is_a_clear_error(demo, tmp_path):
    with pytest.raises(FileNotFoundError, match="checkpoint.pth"):
        run_teacher_training(_train_cfg(demo, tmp_path, epochs=1, resume=True))


@pytest.mark.parametrize("mode", ["ema", "exact"])
def test_class_statistics_pass(teacher, demo, tmp_path, mode):
    metrics, _ = teacher
    out = str(tmp_path / f"class_bn_{mode}.pth")
    info = run_class_stats(_cfg(CLASS_STATS_SCHEMA, data_path=demo, weights=metrics["teacher"], output=out,
                                stats_mode=mode))
    assert info["val_top1"] == pytest.approx(metrics["val_top1"])  # unchanged by the pass
    model = build_model("resnet18", 4, class_aware=True, weights=out)
    for layer in class_bn_layers(model):
        assert not torch.allclose(layer.class_running_mean, torch.zeros_like(layer.class_running_mean))
        # Different classes have different statistics in the first layer at least.
    first = class_bn_layers(model)[0]
    assert (first.class_running_mean[0] - first.class_running_mean[1]).abs().max() > 1e-3


def test_bad_data_path_fails_at_once(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope"):
        run_teacher_training(_cfg(TRAIN_SCHEMA, dataset="tiny", data_path=str(tmp_path / "nope"),
                                  output_dir=str(tmp_path / "o")))


@pytest.mark.cuda
def test_cuda_amp_channels_last_training_and_class_pass(demo, tmp_path):
    metrics = run_teacher_training(_train_cfg(demo, tmp_path, epochs=2, device="cuda", amp=True))
    info = run_class_stats(_cfg(CLASS_STATS_SCHEMA, data_path=demo, weights=metrics["teacher"], device="cuda",
                                amp=True, output=str(tmp_path / "cbn.pth")))
    assert info["val_top1"] == pytest.approx(metrics["val_top1"])
