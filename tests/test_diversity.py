"""Diversity analysis: vectorised per-class metrics against per-pair loop references, penultimate
feature capture on torchvision and timm ResNets, and the CLI end to end on the demo dataset."""
from __future__ import annotations

import copy
import json
import math
import os

import pytest
import torch
from torch import nn

from lpld.analysis import diversity as div

# ---------------------------------------------------------------- loop references (no vectorising)


def ref_cosine(feats, labels, k):
    out = []
    for c in range(k):
        rows = [feats[i] for i in range(len(labels)) if labels[i] == c]
        total, pairs = 0.0, 0
        for i in range(len(rows)):
            for j in range(len(rows)):
                if i != j:
                    a, b = rows[i].double(), rows[j].double()
                    na, nb = a.norm().item(), b.norm().item()
                    total += 0.0 if na == 0 or nb == 0 else (a @ b).item() / (na * nb)
                    pairs += 1
        out.append(total / pairs if pairs else math.nan)
    return torch.tensor(out, dtype=torch.float64)


def ref_mmd2(x, xl, y, yl, k, estimator, sigma=None):
    mmd, sig = [], []
    for c in range(k):
        X = [v.double() for v, l in zip(x, xl) if l == c]
        Y = [v.double() for v, l in zip(y, yl) if l == c]
        need = 2 if estimator == "unbiased" else 1
        if len(X) < need or len(Y) < need:
            mmd.append(math.nan)
            sig.append(math.nan)
            continue
        Z = X + Y
        if sigma is None:
            d = sorted(((Z[i] - Z[j]) ** 2).sum().item() for i in range(len(Z)) for j in range(i + 1, len(Z)))
            s2 = d[(len(d) - 1) // 2] or 1.0  # lower median
        else:
            s2 = sigma ** 2

        def kern(a, b):
            return math.exp(-((a - b) ** 2).sum().item() / (2 * s2))

        def mean_k(A, B, same):
            vals = [kern(A[i], B[j]) for i in range(len(A)) for j in range(len(B))
                    if not (same and estimator == "unbiased" and i == j)]
            return sum(vals) / len(vals)
        mmd.append(mean_k(X, X, True) + mean_k(Y, Y, True) - 2 * mean_k(X, Y, False))
        sig.append(math.sqrt(s2))
    return torch.tensor(mmd, dtype=torch.float64), torch.tensor(sig, dtype=torch.float64)


def random_features(seed=0, k=5, dim=7):
    g = torch.Generator().manual_seed(seed)
    # unequal class sizes, one class with a single image, one class absent from y
    x_counts, y_counts = [4, 4, 6, 1, 3], [5, 5, 3, 4, 0]
    xl = torch.tensor(sum(([c] * n for c, n in enumerate(x_counts)), []))
    yl = torch.tensor(sum(([c] * n for c, n in enumerate(y_counts)), []))
    xl, yl = xl[torch.randperm(len(xl), generator=g)], yl[torch.randperm(len(yl), generator=g)]
    x = torch.randn(len(xl), dim, generator=g).relu() + 0.1 * torch.arange(len(xl)).unsqueeze(1) % 3
    y = torch.randn(len(yl), dim, generator=g) + 0.5
    return x, xl, y, yl, k


def test_cosine_matches_pairwise_loop():
    x, xl, _, _, k = random_features()
    x[0] = 0  # an all-zero feature counts as cosine 0 with everything
    got = div.class_cosine_similarity(x, xl, k)
    want = ref_cosine(x, xl, k)
    assert torch.isnan(got[3]) and torch.isnan(want[3])  # one image: no pairs
    torch.testing.assert_close(got, want, equal_nan=True, rtol=1e-10, atol=1e-12)


def test_cosine_extremes():
    f = torch.tensor([[1.0, 0.0], [2.0, 0.0], [0.0, 1.0], [0.0, -3.0]])
    got = div.class_cosine_similarity(f, torch.tensor([0, 0, 1, 1]), 2)
    torch.testing.assert_close(got, torch.tensor([1.0, -1.0], dtype=torch.float64))


@pytest.mark.parametrize("estimator", ["unbiased", "biased"])
@pytest.mark.parametrize("sigma", [None, 1.7])
def test_gaussian_mmd_matches_loop(estimator, sigma):
    x, xl, y, yl, k = random_features(seed=1)
    got, got_sigma = div.class_mmd2_gaussian(x, xl, y, yl, k, estimator=estimator, sigma=sigma,
                                             max_elements=150)  # forces several chunks per group
    want, want_sigma = ref_mmd2(x, xl, y, yl, k, estimator, sigma)
    torch.testing.assert_close(got, want, equal_nan=True, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(got_sigma, want_sigma, equal_nan=True, rtol=1e-9, atol=1e-12)
    assert torch.isnan(got[4])  # no real images of class 4
    assert torch.isnan(got[3]) == (estimator == "unbiased")  # one synthetic image


def test_mmd_is_zero_for_identical_sets_and_grows_with_shift():
    g = torch.Generator().manual_seed(3)
    a = torch.randn(20, 4, generator=g)
    lab = torch.zeros(20, dtype=torch.long)
    biased, _ = div.class_mmd2_gaussian(a, lab, a.clone(), lab, 1, estimator="biased")
    assert abs(float(biased[0])) < 1e-12
    near, _ = div.class_mmd2_gaussian(a, lab, a + 0.1, lab, 1, sigma=1.0, estimator="biased")
    far, _ = div.class_mmd2_gaussian(a, lab, a + 3.0, lab, 1, sigma=1.0, estimator="biased")
    assert float(far[0]) > float(near[0]) > 0
    b = torch.randn(20, 4, generator=g)  # independent draw: the unbiased estimate is near 0
    same, _ = div.class_mmd2_gaussian(a, lab, b, lab, 1, sigma=1.0)
    shifted, _ = div.class_mmd2_gaussian(a, lab, b + 3.0, lab, 1, sigma=1.0)
    assert abs(float(same[0])) < 0.1 < float(shifted[0])


def test_linear_mmd_is_squared_mean_distance_and_biased_linear_kernel():
    x, xl, y, yl, k = random_features(seed=2)
    got = div.class_linear_mmd2(x, xl, y, yl, k)
    for c in range(k):
        X, Y = x[xl == c].double(), y[yl == c].double()
        if len(X) == 0 or len(Y) == 0:
            assert torch.isnan(got[c])
            continue
        kernel = (X @ X.T).mean() + (Y @ Y.T).mean() - 2 * (X @ Y.T).mean()
        assert float(got[c]) == pytest.approx(float(kernel), rel=1e-9, abs=1e-12)


def test_summarize_ignores_undefined_classes():
    s = div.summarize(torch.tensor([1.0, math.nan, 3.0], dtype=torch.float64))
    assert s == {"mean": 2.0, "std": 1.0, "classes": 2}
    assert div.summarize(torch.tensor([math.nan]))["classes"] == 0


@pytest.mark.parametrize("arch,tiny", [("resnet18", True), ("timm/resnet18", False)])
def test_penultimate_features_are_the_classifier_input(arch, tiny):
    from lpld.models import build_model
    torch.manual_seed(0)
    model = build_model(arch, 7, tiny_stem=tiny).eval()
    x = torch.randn(3, 3, 16, 16)
    feats = div.penultimate_features(model, x)
    trunk = copy.deepcopy(model)
    if hasattr(trunk, "reset_classifier"):
        trunk.reset_classifier(0)  # timm: forward() then returns the pooled features
    else:
        trunk.fc = nn.Identity()
    with torch.no_grad():
        torch.testing.assert_close(feats, trunk(x))
        torch.testing.assert_close(model(x), div.classifier_head(model)(feats))
    assert feats.shape == (3, 512)
    assert not div.classifier_head(model)._forward_pre_hooks  # hook removed


def test_synthetic_class_indices():
    assert div.synthetic_class_indices(["new010", "new011", "new199"]) == [10, 11, 199]
    assert div.synthetic_class_indices(["n02", "n01"], ["n01", "n02", "n03"]) == [1, 0]
    assert div.synthetic_class_indices(["a", "b"], ["x"]) == [0, 1]


def test_limit_per_class_is_seeded_and_bounded():
    samples = [(f"img{i}", i % 3) for i in range(30)]
    a = div.limit_per_class(samples, 4, seed=1, keep=[0, 2])
    assert a == div.limit_per_class(samples, 4, seed=1, keep=[0, 2])
    assert sorted(t for _, t in a) == [0] * 4 + [2] * 4
    assert a != div.limit_per_class(samples, 4, seed=2, keep=[0, 2])
    assert len(div.limit_per_class(samples, None)) == 30


def test_bad_sources_are_named():
    with pytest.raises(ValueError, match="NAME=PATH"):
        div._parse_sources(["just/a/path"])
    with pytest.raises(ValueError, match="A:B"):
        div._class_range("5:2", 10)


def test_cli_end_to_end_on_demo_images_and_cached_features(demo_root, tmp_path, capsys):
    from lpld.models import build_model, save_checkpoint
    torch.manual_seed(0)
    ckpt = str(tmp_path / "teacher.pth")
    save_checkpoint(ckpt, build_model("resnet18", 4, class_aware=True))  # class-BN buffers are skipped
    out = str(tmp_path / "div")
    common = ["--dataset", "imagefolder", "--model", "resnet18", "--no-tiny-stem", "--image-size", "16",
              "--batch-size", "16", "--workers", "0", "--device", "cpu", "--no-progress"]
    # "synthetic" = the demo val split (stands in for distilled images), real = demo train split
    rc = div.main(common + ["--weights", ckpt, "--syn", f"standin={demo_root}/val", "--real", demo_root,
                            "--real-per-class", "5", "--save-features", "--output-dir", out])
    assert rc == 0
    summary = json.load(open(os.path.join(out, "diversity_summary.json")))
    standin = summary["methods"]["standin"]
    assert standin["images"] == 4 * 6 and standin["cosine"]["classes"] == 4
    assert standin["mmd2_rbf"]["classes"] == 4 and math.isfinite(standin["mmd2_linear"]["mean"])
    assert summary["methods"]["real"]["images"] == 4 * 5
    rows = open(os.path.join(out, "diversity_per_class.csv")).read().splitlines()
    assert rows[0].startswith("method,class,class_name") and len(rows) == 1 + 2 * 4
    assert "| standin | 24 | 4 |" in open(os.path.join(out, "diversity.md")).read()
    assert "standin" in capsys.readouterr().out

    # the same analysis from the cached fp16 features, no teacher; restricted to classes 1:3
    out2 = str(tmp_path / "div2")
    rc = div.main(["--syn", f"standin={out}/features_standin.pt", "--real", f"{out}/features_real.pt",
                   "--classes", "0:4", "--output-dir", out2, "--no-progress"])
    assert rc == 0
    again = json.load(open(os.path.join(out2, "diversity_summary.json")))["methods"]["standin"]
    for key in ("cosine", "mmd2_rbf", "mmd2_linear"):
        assert again[key]["mean"] == pytest.approx(standin[key]["mean"], rel=2e-2, abs=1e-3)
    rc = div.main(["--syn", f"standin={out}/features_standin.pt", "--classes", "1:3",
                   "--output-dir", out2, "--no-progress", "--num-classes", "4"])
    assert rc == 0
    only = json.load(open(os.path.join(out2, "diversity_summary.json")))["methods"]
    assert set(only) == {"standin"} and only["standin"]["images"] == 12 and "mmd2_rbf" not in only["standin"]
    # from images: --classes selects before extraction (folders named like the real classes map by name)
    rc = div.main(common + ["--weights", ckpt, "--syn", f"standin={demo_root}/val", "--classes", "1:3",
                            "--num-classes", "4", "--output-dir", out2])
    assert rc == 0
    assert json.load(open(os.path.join(out2, "diversity_summary.json")))["methods"]["standin"]["images"] == 12


def test_cli_real_features_only(tmp_path):
    g = torch.Generator().manual_seed(0)
    feats = str(tmp_path / "real.pt")
    div.save_features(feats, torch.randn(12, 8, generator=g).abs(), torch.arange(12) % 3, class_names=["a", "b", "c"])
    assert div.main(["--real", feats, "--output-dir", str(tmp_path / "o"), "--no-progress"]) == 0
    methods = json.load(open(tmp_path / "o" / "diversity_summary.json"))["methods"]
    assert set(methods) == {"real"} and methods["real"]["cosine"]["classes"] == 3


def test_features_from_different_teachers_are_refused(tmp_path, capsys):
    f, lab = torch.rand(6, 4), torch.arange(6) % 2
    div.save_features(str(tmp_path / "a.pt"), f, lab, teacher="/x/teacher_a.pth")
    div.save_features(str(tmp_path / "b.pt"), f, lab, teacher="/y/teacher_b.pth")
    assert div.main(["--syn", f"a={tmp_path}/a.pt", "--real", f"{tmp_path}/b.pt", "--num-classes", "2",
                     "--output-dir", str(tmp_path / "o")]) == 2
    assert "different teachers" in capsys.readouterr().err


def test_cli_errors_are_reported(tmp_path, capsys):
    assert div.main(["--output-dir", str(tmp_path / "o"), "--no-progress"]) == 2
    assert "--syn" in capsys.readouterr().err
    assert div.main(["--syn", f"x={tmp_path}/missing", "--output-dir", str(tmp_path / "o"),
                     "--no-progress", "--num-classes", "3", "--weights", "nope.pth"]) == 2
    assert "error:" in capsys.readouterr().err
