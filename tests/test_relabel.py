"""Stage 3a relabel on the demo data: determinism, replay check, label pruning, resume, formats, errors."""
from __future__ import annotations

import os
import shutil

import numpy as np
import pytest

from conftest import read_tree
import torch

from lpld.augment import sampler_orders
from lpld.config import parse_config
from lpld.labels import LabelStore, StoreMismatchError, check_compatible, convert, open_label_store
from lpld.models import build_model, save_checkpoint
from lpld.relabel import RELABEL_SCHEMA, replay_check, run_relabel
from lpld.relabel.cli import main_check


@pytest.fixture(scope="module")
def setup(demo_root, tmp_path_factory):
    """48 demo images (4 classes, 16 px) and a random-init Tiny-stem ResNet-18 teacher on disk."""
    tmp = tmp_path_factory.mktemp("relabel")
    torch.manual_seed(0)
    teacher = str(tmp / "teacher.pth")
    save_checkpoint(teacher, build_model("resnet18", 4, tiny_stem=True))
    return {"train_dir": os.path.join(demo_root, "train"), "teacher": teacher, "tmp": tmp}


def _small_teacher() -> torch.nn.Module:
    """A few-ms CNN (the same weights every call) for the tests that need many generations."""
    torch.manual_seed(1)
    return torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.BatchNorm2d(8), torch.nn.ReLU(),
                               torch.nn.AdaptiveAvgPool2d(2), torch.nn.Flatten(), torch.nn.Linear(32, 4))


def _run(setup, out, teacher=None, **over):
    return run_relabel(_cfg(setup, out, **over), teacher=teacher if teacher is not None else _small_teacher())


def _cfg(setup, out, **over):
    cfg = {"dataset": "demo", "train_dir": setup["train_dir"], "teacher_ckpt": setup["teacher"], "tiny_stem": True,
           "batch_size": 8, "epochs": 2, "input_size": 16, "mix_type": "cutmix", "output_dir": str(out),
           "workers": 0, "progress": False, "device": "cpu"}
    cfg.update(over)
    return cfg


def _files(path):
    return read_tree(path)


@pytest.mark.parametrize("drop_last", [False, True])
def test_sampler_orders_are_the_authors_random_sampler(drop_last):
    gen = torch.Generator().manual_seed(42)
    sampler = torch.utils.data.RandomSampler(range(10), generator=gen)
    loader = torch.utils.data.DataLoader(list(range(10)), batch_size=4, sampler=sampler, drop_last=drop_last)
    got = sampler_orders(10, 42, 3)
    for epoch in range(3):  # their loop: one full pass of the loader per epoch
        seen = torch.cat(list(loader)).tolist()
        assert got[epoch, :len(seen)].tolist() == seen


def test_generation_is_deterministic(setup, tmp_path):
    a = _run(setup, tmp_path / "a")
    b = _run(setup, tmp_path / "b", workers=2)  # the worker count does not matter
    assert _files(a) == _files(b)
    store = open_label_store(a)
    assert store.num_batches == 12 and store.batches_per_epoch == 6  # 48 images / 8, 2 epochs
    assert store.manifest["num_images"] == 48 and store.manifest["mix_type"] == "cutmix"
    rec = store.read(5)
    assert rec.logits.dtype == torch.float16 and rec.mix_bbox is not None and rec.flips is not None
    assert sorted(store.epoch_image_order(1).tolist()) == list(range(48))
    assert store.epoch_image_order(1).tolist() == sampler_orders(48, 42, 2)[1].tolist()
    rep = replay_check(a, setup["train_dir"], _small_teacher(), batches=list(range(12)), report=True)
    assert rep.max_abs_diff <= rep.fp16_tolerance
    assert rep.max_abs_diff_stored_dtype == 0.0  # same device: bit-identical before fp16 rounding


def test_replay_check_with_resnet_teacher_checkpoint(setup, tmp_path):
    out = run_relabel(_cfg(setup, tmp_path / "r", epochs=1, batch_size=16))  # teacher from its checkpoint
    rep = replay_check(out, setup["train_dir"], teacher_ckpt=setup["teacher"], batches=[0, 2], report=True)
    assert rep.max_abs_diff <= rep.fp16_tolerance and rep.max_abs_diff_stored_dtype == 0.0
    assert main_check(["--store", out, "--train-dir", setup["train_dir"], "--teacher-ckpt", setup["teacher"],
                       "--batches", "1"]) == 0


def test_replay_check_detects_mispaired_images(setup, tmp_path):
    store = _run(setup, tmp_path / "s", mix_type="mixup", epochs=1, teacher_ckpt=None)
    moved = tmp_path / "images"
    shutil.copytree(setup["train_dir"], moved)
    files = sorted((moved / "class00").iterdir())
    tmp = files[0].read_bytes()
    files[0].write_bytes(files[1].read_bytes())  # swap two images' contents, names unchanged
    files[1].write_bytes(tmp)
    order = open_label_store(store).epoch_image_order(0).tolist()
    ids = [order.index(0) // 8, order.index(1) // 8]
    assert replay_check(store, setup["train_dir"], _small_teacher(), batches=ids) <= 4 * 2 ** -11 * 4
    with pytest.raises(StoreMismatchError, match="images mismatch"):  # the content hashes differ
        replay_check(store, str(moved), _small_teacher(), batches=ids)
    # and the replay itself (without the hash check) sees it too
    rep = replay_check(store, str(moved), _small_teacher(), batches=ids, report=True, check_inputs=False)
    assert rep.max_abs_diff > 10 * rep.fp16_tolerance


def test_prune_ratio_generates_the_first_share(setup, tmp_path):
    # 48 images, batch 10: with pruning the authors drop each epoch's short batch -> 4 per epoch
    full = open_label_store(_run(setup, tmp_path / "full", batch_size=10, epochs=3, drop_last=True))
    half = open_label_store(_run(setup, tmp_path / "half", batch_size=10, epochs=3, prune_ratio=0.5))
    quarter = open_label_store(_run(setup, tmp_path / "q", batch_size=10, epochs=3, prune_ratio=0.75))
    assert full.num_batches == 12 and full.batches_per_epoch == 4
    assert half.num_batches == int(3 * 4 * 0.5) == 6 and half.manifest["drop_last"] is True
    assert quarter.num_batches == int(3 * 4 * 0.25) == 3
    for k in range(6):  # the pruned store is the first (1 - p) share of the unpruned one
        a, b = full.read(k), half.read(k)
        assert torch.equal(a.logits, b.logits) and torch.equal(a.crops, b.crops)
        assert torch.equal(a.image_indices, b.image_indices) and a.mix_bbox == b.mix_bbox
    assert half.epoch_image_order(1).numel() == 20  # half of epoch 1 (2 of 4 batches)
    for store, batches in ((full, 12), (half, 6), (quarter, 3)):  # only the kept share is allocated
        logits = np.load(os.path.join(store.path, "logits.npy"), mmap_mode="r")
        assert logits.shape == (batches, 10, 4)
        assert os.path.getsize(os.path.join(store.path, "logits.npy")) == logits.offset + batches * 10 * 4 * 2
    assert quarter.nbytes() < half.nbytes() < full.nbytes()
    unpruned = open_label_store(_run(setup, tmp_path / "p0", batch_size=10, epochs=3))
    assert unpruned.batches_per_epoch == 5 and unpruned.read(4).batch_size == 8  # ceil without pruning


class _Crash(RuntimeError):
    pass


def test_resume_after_interruption_is_byte_identical(setup, tmp_path):
    ref = _run(setup, tmp_path / "ref", commit_every=3)
    out = tmp_path / "run"
    _run(setup, out, stop_after=4, commit_every=3)  # a time-sliced job
    assert open_label_store(str(out)).num_batches == 4

    teacher = _small_teacher()
    calls = {"n": 0}
    forward = teacher.forward

    def crashing(x):
        calls["n"] += 1
        if calls["n"] == 6:
            raise _Crash("killed")
        return forward(x)

    teacher.forward = crashing
    with pytest.raises(_Crash):
        _run(setup, out, teacher=teacher, commit_every=3)
    assert open_label_store(str(out)).num_batches == 9  # 4 + the 5 complete batches before the crash
    _run(setup, out, commit_every=3)
    assert _files(ref) == _files(str(out))
    with pytest.raises(StoreMismatchError, match="seed"):
        _run(setup, out, fkd_seed=1)


def test_authors_format_generation_and_conversion(setup, tmp_path):
    ours = _run(setup, tmp_path / "ours")
    theirs = _run(setup, tmp_path / "theirs", format="authors")
    assert sorted(d for d in os.listdir(theirs) if d.startswith("epoch_")) == ["epoch_0", "epoch_1"]
    assert len(os.listdir(os.path.join(theirs, "epoch_0"))) == 6
    cfg = torch.load(os.path.join(theirs, "epoch_1", "batch_2.tar"))
    assert len(cfg) == 6 and cfg[5].dtype == torch.float16 and cfg[1].dtype == torch.bool
    assert replay_check(theirs, setup["train_dir"], _small_teacher()) <= 4 * 2 ** -11 * 4
    back = convert(theirs, str(tmp_path / "back"), to="ours", progress=False)
    for name in os.listdir(ours):
        if name.endswith(".npy"):
            assert np.array_equal(np.load(os.path.join(ours, name)), np.load(os.path.join(back, name))), name
    # an interrupted authors-format run resumes too
    part = tmp_path / "part"
    _run(setup, part, format="authors", stop_after=7)
    _run(setup, part, format="authors")
    assert _files(theirs) == _files(str(part))


def test_imagenet21k_recipe_uses_cutout_without_normalisation(setup, tmp_path):
    ckpt = str(tmp_path / "timm.pth")
    save_checkpoint(ckpt, build_model("timm/resnet18", 4))
    out = run_relabel(_cfg(setup, tmp_path / "in21k", dataset="imagenet21k", model="resnet18", tiny_stem=None,
                           teacher_ckpt=ckpt, num_classes=4, mix_type="None", epochs=1, batch_size=16))
    store = open_label_store(out)
    rec = store.read(0)
    assert rec.flips is None and rec.cutout.shape == (16, 7) and rec.mix_index is None
    assert store.manifest["normalize"] == [None, None] and store.manifest["teacher"]["arch"] == "timm/resnet18"
    assert replay_check(out, setup["train_dir"], teacher_ckpt=ckpt, batches=[0, 2]) <= 4 * 2 ** -11 * 8


def test_clear_errors_for_mismatched_images(setup, tmp_path):
    out = _run(setup, tmp_path / "s", epochs=1)
    store = open_label_store(out)
    with pytest.raises(StoreMismatchError, match="batch size 8"):
        check_compatible(store, batch_size=16)
    with pytest.raises(StoreMismatchError, match="4 classes"):
        check_compatible(store, num_classes=200)
    fewer = tmp_path / "fewer"
    shutil.copytree(setup["train_dir"], fewer)
    os.remove(sorted((fewer / "class03").iterdir())[-1])
    with pytest.raises(StoreMismatchError, match="48 images"):
        replay_check(out, str(fewer), _small_teacher())
    renamed = tmp_path / "renamed"
    shutil.copytree(setup["train_dir"], renamed)
    first = sorted((renamed / "class00").iterdir())[0]
    first.rename(first.with_name("zz_" + first.name))
    with pytest.raises(StoreMismatchError, match="other image files"):
        replay_check(out, str(renamed), _small_teacher())
    with pytest.raises(ValueError, match="teacher weights"):
        run_relabel(_cfg(setup, tmp_path / "t", teacher_ckpt=None))


@pytest.mark.parametrize("label_topk", [None, 2])
def test_a_diverged_teacher_is_an_error_not_nan_labels(setup, tmp_path, label_topk):
    """A teacher whose logits overflow fp16 (or are NaN) would give every student a NaN loss: relabel
    stops at the first batch, naming it, and keeps nothing half-written as complete."""
    teacher = _small_teacher()
    with torch.no_grad():
        teacher[-1].bias.fill_(1e5)  # beyond fp16's 65504
    with pytest.raises(ValueError, match="non-finite soft labels for batch 0"):
        _run(setup, tmp_path / "s", teacher=teacher, epochs=1, label_topk=label_topk)
    assert not os.path.isfile(tmp_path / "s" / "manifest.json") or open_label_store(str(tmp_path / "s")).num_batches == 0


def test_authors_yaml_sections_load(tmp_path):
    cfg_file = tmp_path / "LPLD_in1k.yaml"
    cfg_file.write_text(
        "common:\n  basic:\n    dataset: imagenet1k\n    batch_size: 128\n    epochs: 300\n    workers: 8\n"
        "relabel:\n  basic:\n    model: resnet18\n    fkd_seed: 42\n    input_size: 224\n    min_scale_crops: 0.08\n"
        "    max_scale_crops: 1\n    mode: fkd_save\n    mix_type: cutmix\n  store_true:\n    - use_fp16\n"
        "validate:\n  basic:\n    temperature: 20\n")
    ns = parse_config(RELABEL_SCHEMA, ["--config", str(cfg_file), "--train_dir".replace("_", "-"), "/x"],
                      sections=("common", "relabel"))
    assert ns.dataset == "imagenet1k" and ns.batch_size == 128 and ns.max_scale_crops == 1.0
    assert ns.mix_type == "cutmix" and ns.use_fp16 is True and ns.train_dir == "/x"
    from lpld.relabel.cli import _dashed
    assert _dashed(["--train_dir", "a", "--fkd_path=b", "--other_x"], RELABEL_SCHEMA) == \
        ["--train-dir", "a", "--fkd-path=b", "--other_x"]


def test_store_reads_back_in_label_store_class(setup, tmp_path):
    out = _run(setup, tmp_path / "s", epochs=1, use_fp16=False)
    store = LabelStore(out)
    assert store.read(0).logits.dtype == torch.float32


@pytest.mark.cuda
def test_generation_and_replay_on_cuda(setup, tmp_path):
    out = run_relabel(_cfg(setup, tmp_path / "gpu", device="cuda", epochs=1))
    rep = replay_check(out, setup["train_dir"], teacher_ckpt=setup["teacher"], device="cuda", report=True)
    assert rep.max_abs_diff <= rep.fp16_tolerance
    cpu = replay_check(out, setup["train_dir"], teacher_ckpt=setup["teacher"], device="cpu", report=True)
    # cuDNN (TF32 convolutions by default) vs CPU arithmetic: small next to a mis-pairing (~ the logits)
    assert cpu.max_abs_diff <= 0.05 * max(1.0, cpu.max_abs_logit)




def test_check_labels_replays_topk_stores(setup, tmp_path, one_thread):
    """check-labels on a top-k store: the teacher's logits at the stored classes match the stored
    values (fp16 / half a code step), the stored classes are its top k, and (regenerated) every
    batch's digest; labels of another teacher fail."""
    codec = "uint8"
    out = run_relabel(_cfg(setup, tmp_path / "k", epochs=1, batch_size=16, label_topk=3, label_codec=codec,
                           augmentation="regenerated"))
    store = open_label_store(out)
    assert store.manifest["label_topk"] == 3 and store.regenerated
    assert main_check(["--store", out, "--train-dir", setup["train_dir"], "--teacher-ckpt", setup["teacher"],
                       "--batches", "3"]) == 0
    rep = replay_check(out, setup["train_dir"], teacher_ckpt=setup["teacher"], batches=3, report=True)
    assert rep.max_abs_diff <= rep.fp16_tolerance and rep.topk_misses == 0
    assert rep.codec_step > 0
    other = replay_check(out, setup["train_dir"], _small_teacher(), batches=3, report=True, check_inputs=False)
    assert other.max_abs_diff > 10 * other.fp16_tolerance or other.topk_misses > 0


def test_label_quantization_flag_and_bad_label_options(setup, tmp_path):
    cfg = parse_config(RELABEL_SCHEMA, ["--train-dir", "x", "--label-topk", "10", "--label-codec", "uint8",
                                        "--augmentation", "regenerated"])
    assert (cfg.label_topk, cfg.label_codec, cfg.augmentation) == (10, "uint8", "regenerated")
    a = open_label_store(_run(setup, tmp_path / "q", epochs=1, label_quantization="MR-2"))
    b = open_label_store(_run(setup, tmp_path / "t", epochs=1, label_topk=2))
    assert a.manifest["label_topk"] == b.manifest["label_topk"] == 2
    assert torch.equal(a.read(1).topk_indices, b.read(1).topk_indices)
    from lpld.utils.errors import InputValueError
    for bad, match in (({"label_quantization": "MS-2"}, "MR-<k>"), ({"label_topk": 3, "label_quantization": "MR-2"},
                       "disagree"), ({"label_codec": "uint8"}, "set --label-topk"),
                       ({"label_topk": 2, "augmentation": "regenerated", "format": "authors"}, "only in our format")):
        with pytest.raises((InputValueError, ValueError), match=match):
            _run(setup, tmp_path / "bad", epochs=1, **bad)
