"""lpld.augment: recorded crop/flip/Cutout/CutMix/MixUp match torchvision and the authors' semantics."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw
from torchvision import transforms as T
from torchvision.transforms import InterpolationMode
from torchvision.transforms import functional as TF

from lpld.augment import (CUTOUT_FACTOR, BatchRecord, apply_mix, apply_view, apply_views, batch_generators,
                          cutmix_box, normalize_mix_type, replay_batch, sample_batch_params, sample_crop, view_uint8)

MEAN, STD = (0.4802, 0.4481, 0.3975), (0.2302, 0.2265, 0.2262)


def _image(w: int, h: int, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8))


@pytest.mark.parametrize("hw", [(32, 32), (17, 40), (64, 20), (5, 300)])
def test_sample_crop_is_torchvision_get_params(hw):
    h, w = hw
    img = _image(w, h)
    for seed in range(25):
        torch.manual_seed(seed)
        ref = T.RandomResizedCrop.get_params(img, [0.08, 1.0], [3 / 4, 4 / 3])
        gen = torch.Generator().manual_seed(seed)
        assert sample_crop(h, w, (0.08, 1.0), (3 / 4, 4 / 3), gen) == tuple(ref)


def test_batch_params_are_a_function_of_seed_and_batch_id():
    sizes = [(16, 16)] * 6
    a = sample_batch_params(3, range(6), sizes, seed=42, size=16, mix_type="cutmix")
    b = sample_batch_params(3, range(6), sizes, seed=42, size=16, mix_type="cutmix")
    c = sample_batch_params(4, range(6), sizes, seed=42, size=16, mix_type="cutmix")
    assert torch.equal(a.crops, b.crops) and torch.equal(a.flips, b.flips)
    assert torch.equal(a.mix_index, b.mix_index) and a.mix_lam == b.mix_lam and a.mix_bbox == b.mix_bbox
    assert not torch.equal(a.crops, c.crops)
    assert a.crops.dtype == torch.float32 and a.flips.dtype == torch.bool
    assert sorted(a.mix_index.tolist()) == list(range(6))
    g1, r1 = batch_generators(42, 3)
    g2, r2 = batch_generators(43, 3)
    assert torch.rand(1, generator=g1).item() != torch.rand(1, generator=g2).item()


def test_flip_and_mix_draw_rates():
    sizes = [(32, 32)] * 64
    flips = torch.cat([sample_batch_params(k, range(64), sizes, seed=1, size=8).flips for k in range(20)])
    assert 0.4 < flips.float().mean().item() < 0.6
    lams = [sample_batch_params(k, range(4), sizes[:4], seed=1, size=8, mix_type="mixup").mix_lam for k in range(300)]
    # Beta(0.8, 0.8): mean 0.5, variance 1/(4 * 2.6) ~ 0.096
    assert abs(np.mean(lams) - 0.5) < 0.06 and abs(np.var(lams) - 0.096) < 0.03


def test_apply_view_matches_authors_pipeline():
    """Recorded fractions replay the same pixels as cropping with the integer box (their save path)."""
    img = _image(37, 29, seed=3)
    for seed in range(10):
        gen = torch.Generator().manual_seed(seed)
        top, left, h, w = sample_crop(29, 37, generator=gen)
        flip = seed % 2 == 0
        ref = TF.resized_crop(img, top, left, h, w, [16, 16], InterpolationMode.BILINEAR)
        if flip:
            ref = TF.hflip(ref)
        ref = T.Normalize(MEAN, STD)(T.ToTensor()(ref))
        crop = torch.tensor([top / 29, left / 37, h / 29, w / 37], dtype=torch.float32)
        assert torch.equal(apply_view(img, crop, flip, None, 16, MEAN, STD), ref)


def test_cutout_matches_authors_box_and_colour():
    img = _image(40, 40, seed=5)
    crop = torch.tensor([0.0, 0.0, 1.0, 1.0])
    rec = sample_batch_params(0, [0], [(40, 40)], seed=7, size=20, cutout=True)
    params = rec.cutout[0]
    out = apply_view(img, crop, False, params, 20, None, None)
    # reference: the authors' formula on integer values, PIL's inclusive rectangle
    ref = TF.resized_crop(img, 0, 0, 40, 40, [20, 20], InterpolationMode.BILINEAR)
    y_c, x_c = int(round(params[0].item() * 20)), int(round(params[1].item() * 20))
    cut = int(0.5 * 20 + 0.5)
    assert round(params[2].item() * 20) == cut
    box = [max(x_c - cut // 2, 0), max(y_c - cut // 2, 0), min(x_c + cut // 2, 20), min(y_c + cut // 2, 20)]
    colour = tuple(int(v) for v in params[4:].tolist())
    ImageDraw.Draw(ref).rectangle(box, fill=colour)
    assert torch.equal(out, T.ToTensor()(ref))
    assert torch.allclose(out[:, box[1], box[0]], torch.tensor(colour) / 255.0)
    assert rec.flips is None and rec.cutout.shape == (1, 7)


def test_cutout_replay_rounds_the_recorded_centre_where_the_authors_student_truncates():
    """The recorded Cutout centre is a float32 fraction. Our replay rounds it back to the pixel the
    teacher's view was drawn with, so teacher and student inputs agree. The authors' student side
    multiplies the float32 fractions back and hands the floats to PIL, which truncates: at 224 px a
    few centres per axis come out 1 px off their teacher's box. We keep the teacher's box."""
    size, cut = 224, int(CUTOUT_FACTOR * 224 + 0.5)
    img = Image.new("RGB", (size, size))
    full = torch.tensor([0.0, 0.0, 1.0, 1.0])
    authors_off = 0
    for c in range(size):
        params = torch.tensor([c / size, 5 / size, cut / size, cut / size, 255, 0, 0], dtype=torch.float32)
        ours = view_uint8(img, full, False, params, size)
        teacher = img.copy()  # the teacher's box: the integer centre it drew
        ImageDraw.Draw(teacher).rectangle([max(5 - cut // 2, 0), max(c - cut // 2, 0), min(5 + cut // 2, size),
                                           min(c + cut // 2, size)], fill=(255, 0, 0))
        assert torch.equal(ours, TF.pil_to_tensor(teacher)), f"centre {c}"
        y_c, x_c, h_cut, w_cut = (params[:4] * torch.tensor([size, size, size, size])).tolist()
        student = img.copy()  # the authors' student side: float box straight into PIL
        ImageDraw.Draw(student).rectangle([np.clip(x_c - w_cut // 2, 0, size), np.clip(y_c - h_cut // 2, 0, size),
                                           np.clip(x_c + w_cut // 2, 0, size), np.clip(y_c + h_cut // 2, 0, size)],
                                          fill=(255, 0, 0))
        authors_off += not torch.equal(ours, TF.pil_to_tensor(student))
    assert 0 < authors_off < 0.05 * size


def test_cutmix_box_is_rand_bbox():
    rng = np.random.default_rng(0)
    for _ in range(50):
        lam, seed = float(rng.uniform()), int(rng.integers(1 << 30))
        box = cutmix_box(24, 24, lam, np.random.default_rng(seed))
        ref_rng = np.random.default_rng(seed)
        cut = int(24 * math.sqrt(1 - lam))
        cx, cy = int(ref_rng.integers(24)), int(ref_rng.integers(24))
        ref = (int(np.clip(cx - cut // 2, 0, 24)), int(np.clip(cy - cut // 2, 0, 24)),
               int(np.clip(cx + cut // 2, 0, 24)), int(np.clip(cy + cut // 2, 0, 24)))
        assert box == ref


def test_apply_mix_cutmix_and_mixup():
    batch = torch.randn(5, 3, 8, 8)
    perm = torch.tensor([4, 3, 2, 1, 0])
    rec = BatchRecord(0, torch.arange(5), torch.zeros(5, 4), mix_index=perm, mix_lam=0.3, mix_bbox=(1, 2, 5, 7))
    out = apply_mix(batch, rec)
    assert torch.equal(out[:, :, 1:5, 2:7], batch[perm][:, :, 1:5, 2:7])
    mask = torch.ones(8, 8, dtype=torch.bool)
    mask[1:5, 2:7] = False
    assert torch.equal(out[:, :, mask], batch[:, :, mask])
    assert not torch.equal(out, batch)
    rec.mix_bbox = None
    assert torch.equal(apply_mix(batch, rec), 0.3 * batch + 0.7 * batch[perm])
    rec.mix_index = None
    assert apply_mix(batch, rec) is batch


def test_replay_batch_is_views_then_mix():
    images = [_image(20 + k, 24, seed=k) for k in range(4)]
    rec = sample_batch_params(9, [2, 0, 3, 1], [images[i].size for i in [2, 0, 3, 1]], seed=5, size=12,
                              mix_type="cutmix")
    out = replay_batch(lambda i: images[i], rec, 12, MEAN, STD)
    views = apply_views([images[i] for i in [2, 0, 3, 1]], rec.crops, rec.flips, None, 12, MEAN, STD)
    assert out.shape == (4, 3, 12, 12)
    assert torch.equal(out, apply_mix(views, rec))
    assert rec.mix_type == "cutmix"


def test_normalize_mix_type():
    assert normalize_mix_type(None) == "none" and normalize_mix_type("None") == "none"
    assert normalize_mix_type("CutMix") == "cutmix"
    with pytest.raises(ValueError, match="mix_type"):
        normalize_mix_type("cutout")
