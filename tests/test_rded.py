"""RDED image source: crops, realism scores, selection and stitching against straightforward
references (RDED's synthesize/utils.py semantics); the stage's layout, determinism and resumption."""
from __future__ import annotations

import argparse
import json
import os

import pytest

from conftest import parse_with, read_tree
import torch
import torch.nn.functional as F
import torchvision.transforms as T

from lpld.config import parse_config
from lpld.models import build_model, save_checkpoint
from lpld.recover.rded import (RDED_SCHEMA, candidate_patches, realism_scores, run_rded, select_patches,
                               stitch)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _tiny_teacher(classes: int = 4) -> torch.nn.Module:
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 6, 3, padding=1), torch.nn.BatchNorm2d(6), torch.nn.ReLU(),
                              torch.nn.AdaptiveAvgPool2d(2), torch.nn.Flatten(), torch.nn.Linear(24, classes))
    with torch.no_grad():  # non-trivial BN statistics, so that eval mode matters
        net[1].running_mean.uniform_(-0.5, 0.5)
        net[1].running_var.uniform_(0.5, 2.0)
    return net.eval()


def _reference_select(teacher, patches, label, size, count):
    """RDED's selector written out: one patch at a time, pasted on a zero canvas, -log softmax."""
    images, crops, _, p, _ = patches.shape
    offset = (size - p) // 2
    scores = torch.empty(images, crops)
    for i in range(images):
        for j in range(crops):
            canvas = torch.zeros(1, 3, size, size)
            canvas[0, :, offset:offset + p, offset:offset + p] = patches[i, j]
            with torch.no_grad():
                prob = torch.softmax(teacher(canvas), dim=1)[0, label]
            scores[i, j] = -torch.log(prob)
    best = []
    for i in range(images):
        j = min(range(crops), key=lambda k: (scores[i, k].item(), k))  # first minimum
        best.append((scores[i, j].item(), i, j))
    best.sort()  # by score, then image position
    chosen = best[:count]
    return scores, torch.stack([patches[i, j] for _, i, j in chosen]), [s for s, _, _ in chosen]


def test_realism_scores_and_selection_equal_the_reference():
    teacher = _tiny_teacher()
    torch.manual_seed(1)
    patches = torch.randn(7, 3, 3, 8, 8)
    ref_scores, ref_chosen, ref_best = _reference_select(teacher, patches, 2, 16, 5)
    scores = realism_scores(teacher, patches, 2, 16, batch_size=4, device=torch.device("cpu"))
    assert scores.shape == (7, 3)
    torch.testing.assert_close(scores, ref_scores, rtol=1e-5, atol=1e-5)
    chosen, best = select_patches(patches, scores, 5)
    assert torch.equal(chosen, ref_chosen)
    torch.testing.assert_close(best, torch.tensor(ref_best), rtol=1e-5, atol=1e-5)


def test_selection_keeps_the_first_crop_and_the_first_image_on_ties():
    patches = torch.arange(4 * 2).float().view(4, 2, 1, 1, 1).expand(4, 2, 3, 2, 2).clone()
    scores = torch.tensor([[1.0, 1.0], [0.5, 0.2], [1.0, 3.0], [0.2, 0.9]])
    chosen, best = select_patches(patches, scores, 3)
    # best crops: image0 crop0 (tie -> first), image1 crop1, image2 crop0, image3 crop0;
    # ranking 0.2 (image1), 0.2 (image3), 1.0 (image0) -- ties by image position
    assert chosen[:, 0, 0, 0].tolist() == [3.0, 6.0, 0.0]
    assert best.tolist() == pytest.approx([0.2, 0.2, 1.0])
    with pytest.raises(ValueError, match="raise --mipc"):
        select_patches(patches, scores, 5)


def _reference_stitch(patches, size, factor, ipc):
    """mix_images written pixel by pixel: nearest neighbour is src = floor(dst * in / out)."""
    base, extra = divmod(size, factor)
    sides = [base + 1 if i < extra else base for i in range(factor)]
    starts = [sum(sides[:i]) for i in range(factor)]
    p = patches.shape[-1]
    out = torch.zeros(ipc, 3, size, size)
    for q in range(ipc):
        for i in range(factor):
            for j in range(factor):
                src = patches[(i * factor + j) * ipc + q]
                for y in range(sides[i]):
                    for x in range(sides[j]):
                        sy, sx = (y * p) // sides[i], (x * p) // sides[j]
                        out[q, :, starts[i] + y, starts[j] + x] = src[:, sy, sx]
    return out


@pytest.mark.parametrize("size,factor", [(8, 2), (7, 2), (10, 3), (6, 1)])
def test_stitch_equals_the_reference(size, factor):
    ipc = 3
    patch = size // factor
    patches = torch.randn(ipc * factor ** 2, 3, patch, patch, generator=torch.Generator().manual_seed(size))
    out = stitch(patches, size, factor, ipc)
    assert torch.equal(out, _reference_stitch(patches, size, factor, ipc))
    if factor == 1:
        assert torch.equal(out, patches)


def test_candidate_crops_are_torchvision_random_resized_crop():
    image = torch.rand(3, 20, 14, generator=torch.Generator().manual_seed(0))
    torch.manual_seed(5)
    crop = T.RandomResizedCrop(6, ratio=(1, 1), antialias=True)
    reference = torch.stack([crop(image) for _ in range(4)])
    torch.manual_seed(5)
    ours = candidate_patches(image, 4, 6, (0.08, 1.0), generator=None)
    assert torch.equal(ours, reference)


def test_pad_is_rdeds_centred_zero_padding():
    from lpld.recover.rded import pad_to
    x = torch.ones(1, 3, 3, 3)
    padded = pad_to(x, 6)
    assert torch.equal(padded, F.pad(x, (1, 2, 1, 2)))  # RDED pad(): top/left = d // 2


# --- the stage on the demo data -----------------------------------------------------------------------
ARCH = "timm/test_resnet"  # an untrained 0.4 M-parameter ResNet scores the crops: the stage's logic, little compute


@pytest.fixture(scope="module")
def teacher_path(tmp_path_factory):
    torch.manual_seed(0)
    path = str(tmp_path_factory.mktemp("rded") / "teacher.pth")
    save_checkpoint(path, build_model(ARCH, 4))
    return path


def _cfg(demo_root, teacher, out, **over) -> argparse.Namespace:
    values = dict(dataset="demo", data_path=demo_root, teacher=teacher, model=ARCH, image_size=16, ipc=2, factor=2,
                  num_crop=2, mipc=8, batch_size=16, output_dir=str(out), exp_name="rded", progress=False,
                  device="cpu")
    values.update(over)
    return parse_with(RDED_SCHEMA, values)


def _files(root):
    return read_tree(root, top="new")  # the class folders


def test_stage_layout_determinism_shards_and_resume(demo_root, teacher_path, tmp_path):
    from PIL import Image
    root = run_rded(_cfg(demo_root, teacher_path, tmp_path / "a"))
    files = _files(root)
    assert sorted(files) == [f"new{c:03d}/class{c:03d}_id{i:03d}.jpg" for c in range(4) for i in range(2)]
    with Image.open(os.path.join(root, "new001", "class001_id000.jpg")) as img:
        assert img.format == "JPEG" and img.size == (16, 16)
    assert os.path.isfile(os.path.join(root, "rded.json"))
    # an image depends on (settings, seed, class) only: shards and loader workers change nothing
    shard = tmp_path / "b"
    run_rded(_cfg(demo_root, teacher_path, shard, class_end=1, workers=1))
    run_rded(_cfg(demo_root, teacher_path, shard, class_start=1))
    assert _files(os.path.join(shard, "rded")) == files
    # resume: a finished class is kept, a missing one redone, a stale temporary folder removed
    import shutil
    shutil.rmtree(os.path.join(root, "new002"))
    os.makedirs(os.path.join(root, ".new002.dead.tmp"))
    run_rded(_cfg(demo_root, teacher_path, tmp_path / "a"))
    assert _files(root) == files and not os.path.exists(os.path.join(root, ".new002.dead.tmp"))
    # another seed draws other images; the same folder refuses other settings
    other = run_rded(_cfg(demo_root, teacher_path, tmp_path / "c", seed=1))
    assert _files(other) != files
    with pytest.raises(ValueError, match="other settings"):
        run_rded(_cfg(demo_root, teacher_path, tmp_path / "a", seed=1))


def test_stage_errors_name_the_fix(demo_root, teacher_path, tmp_path):
    with pytest.raises(ValueError, match="raise --mipc"):
        run_rded(_cfg(demo_root, teacher_path, tmp_path, mipc=7))
    with pytest.raises(ValueError, match="fewer than --mipc 20"):
        run_rded(_cfg(demo_root, teacher_path, tmp_path, mipc=20))
    imagenet = run_rded(_cfg(demo_root, teacher_path, tmp_path, normalization="imagenet", ipc=1, exp_name="in"))
    with open(os.path.join(imagenet, "rded.json")) as f:
        assert json.load(f)["mean_std"] == [[0.485, 0.456, 0.406], [0.229, 0.224, 0.225]]
    wrong = str(tmp_path / "teacher10.pth")
    save_checkpoint(wrong, build_model(ARCH, 10))
    with pytest.raises(ValueError, match="has 10 classes"):
        run_rded(_cfg(demo_root, wrong, tmp_path))


@pytest.mark.parametrize("preset", ["rded_tiny.yaml", "rded_imagenet1k.yaml", "rded_demo.yaml"])
def test_presets_parse(preset):
    cfg = parse_config(RDED_SCHEMA, ["--config", os.path.join(REPO, "recover", "configs", preset)])
    assert cfg.mipc >= cfg.ipc * cfg.factor ** 2


def test_commands_are_listed(capsys):
    from lpld.cli import main
    main([])
    listing = capsys.readouterr().out
    assert "rded" in listing and "random-real" in listing
    with pytest.raises(SystemExit) as exit_info:
        main(["rded", "--help"])
    assert exit_info.value.code == 0 and "--mipc" in capsys.readouterr().out
