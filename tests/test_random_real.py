"""Random real subset: the draw is deterministic per (seed, class), the layout is the recovered-image
layout, JPEG sources are copied byte for byte and others re-encoded, shards and resumption agree."""
from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest

from conftest import parse_with, read_tree
from PIL import Image

from lpld.config import parse_config
from lpld.recover.random_real import RANDOM_REAL_SCHEMA, draw_images, run_random_real

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _cfg(data_path, out, **over):
    values = dict(dataset="demo", data_path=data_path, ipc=3, seed=0, image_size=16, output_dir=str(out),
                  exp_name="rr", progress=False)
    values.update(over)
    return parse_with(RANDOM_REAL_SCHEMA, values)


def _files(root):
    return read_tree(root, top="new")  # the class folders


def test_draw_is_a_seeded_permutation_per_class():
    paths = [f"img{i:02d}.png" for i in range(12)]
    expected = [paths[k] for k in np.random.default_rng([4, 2]).permutation(12)[:5]]
    assert draw_images(paths, 5, seed=4, class_id=2) == expected
    assert draw_images(paths, 5, seed=4, class_id=2) == draw_images(list(paths), 5, 4, 2)
    assert draw_images(paths, 5, seed=4, class_id=3) != expected
    assert draw_images(paths, 5, seed=5, class_id=2) != expected
    with pytest.raises(ValueError, match="fewer than --ipc 13"):
        draw_images(paths, 13, seed=0, class_id=0)


def test_layout_sources_and_determinism(demo_root, tmp_path):
    root = run_random_real(_cfg(demo_root, tmp_path / "a"))
    files = _files(root)
    assert sorted(files) == [f"new{c:03d}/class{c:03d}_id{i:03d}.jpg" for c in range(4) for i in range(3)]
    with open(os.path.join(root, "random_real.json")) as f:
        manifest = json.load(f)
    train = sorted(os.listdir(os.path.join(demo_root, "train", "class01")))
    expected = [os.path.join("train", "class01", train[k]) for k in np.random.default_rng([0, 1]).permutation(12)[:3]]
    assert manifest["sources"]["1"] == expected
    # the demo's PNGs become JPEG (quality 75), pixel content preserved up to JPEG loss
    with Image.open(os.path.join(root, "new001", "class001_id000.jpg")) as img:
        assert img.format == "JPEG" and img.size == (16, 16)
        ours = np.asarray(img.convert("RGB"), dtype=np.float64)
    with Image.open(os.path.join(demo_root, expected[0])) as src:
        assert np.abs(ours - np.asarray(src.convert("RGB"), dtype=np.float64)).mean() < 20
    # same seed: same bytes, whatever the class ranges; resume redoes only what is missing
    shard = tmp_path / "b"
    run_random_real(_cfg(demo_root, shard, class_end=2))
    run_random_real(_cfg(demo_root, shard, class_start=2))
    assert _files(os.path.join(shard, "rr")) == files
    shutil.rmtree(os.path.join(root, "new003"))
    os.makedirs(os.path.join(root, ".new003.x.tmp"))
    run_random_real(_cfg(demo_root, tmp_path / "a"))
    assert _files(root) == files and not os.path.exists(os.path.join(root, ".new003.x.tmp"))
    assert _files(run_random_real(_cfg(demo_root, tmp_path / "c", seed=1))) != files
    with pytest.raises(ValueError, match="other settings"):
        run_random_real(_cfg(demo_root, tmp_path / "a", seed=1))


@pytest.fixture(scope="module")
def jpeg_root(tmp_path_factory):
    """An ImageFolder of JPEGs: 2 classes x 4 images, 20 x 12 px."""
    root = tmp_path_factory.mktemp("jpegs")
    rng = np.random.default_rng(0)
    for c in range(2):
        os.makedirs(root / "train" / f"c{c}")
        for i in range(4):
            Image.fromarray(rng.integers(0, 256, (12, 20, 3), dtype=np.uint8)).save(
                root / "train" / f"c{c}" / f"{i}.JPEG", quality=90)
    return str(root)


def test_jpeg_sources_are_copied_byte_for_byte_unless_resized(jpeg_root, tmp_path):
    kept = run_random_real(_cfg(jpeg_root, tmp_path, dataset="imagefolder", ipc=2, image_size=0, exp_name="kept"))
    with open(os.path.join(kept, "random_real.json")) as f:
        sources = json.load(f)["sources"]
    for c in range(2):
        for i, rel in enumerate(sources[str(c)]):
            with open(os.path.join(jpeg_root, rel), "rb") as a, \
                    open(os.path.join(kept, f"new{c:03d}", f"class{c:03d}_id{i:03d}.jpg"), "rb") as b:
                assert a.read() == b.read()
    small = run_random_real(_cfg(jpeg_root, tmp_path, dataset="imagefolder", ipc=2, image_size=8, exp_name="small"))
    with Image.open(os.path.join(small, "new000", "class000_id000.jpg")) as img:
        assert img.size == (8, 8)  # shorter side 12 -> 8, centre crop 8 x 8


@pytest.mark.parametrize("preset", ["random_real_tiny.yaml", "random_real_imagenet1k.yaml",
                                    "random_real_demo.yaml"])
def test_presets_parse(preset):
    cfg = parse_config(RANDOM_REAL_SCHEMA, ["--config", os.path.join(REPO, "recover", "configs", preset)])
    assert cfg.ipc >= 1 and cfg.image_size in (32, 64, 224)


def test_command_line_entry(demo_root, tmp_path, capsys):
    from lpld.cli import main
    main(["random-real", "--dataset", "demo", "--data-path", demo_root, "--ipc", "1", "--image-size", "16",
          "--output-dir", str(tmp_path), "--exp-name", "cli", "--no-progress"])
    assert os.path.isfile(os.path.join(tmp_path, "cli", "new003", "class003_id000.jpg"))
