"""Checkpoint compatibility with the authors' class-BN checkpoints (resnet18_0.pth, resnet18_tiny_0.pth)."""
import pytest
import torch
import torchvision

from lpld.models import build_model, checkpoint_has_class_stats, load_weights, read_state_dict, save_checkpoint


@pytest.mark.parametrize("num_classes,tiny", [(1000, False), (200, True)])
def test_class_bn_key_names_and_shapes(tmp_path, num_classes, tiny):
    model = build_model("resnet18", num_classes, tiny_stem=tiny, class_aware=True)
    path = str(tmp_path / "resnet18_0.pth")
    save_checkpoint(path, model)
    raw = torch.load(path, map_location="cpu", weights_only=True)
    assert set(raw) == {"model"}
    sd = raw["model"]
    plain = torchvision.models.resnet18(num_classes=num_classes).state_dict()
    bn_prefixes = [k[: -len(".running_mean")] for k in plain if k.endswith(".running_mean")]
    assert len(bn_prefixes) == 20
    for prefix in bn_prefixes:
        channels = plain[prefix + ".running_mean"].shape[0]
        assert sd[prefix + ".class_running_mean"].shape == (num_classes, channels)
        assert sd[prefix + ".class_running_var"].shape == (num_classes, channels)
    # Everything else is the torchvision ResNet-18 layout (with the Tiny stem: a 3x3 conv1).
    assert set(sd) - {k for k in sd if "class_running" in k} == set(plain)
    assert sd["conv1.weight"].shape == ((64, 3, 3, 3) if tiny else (64, 3, 7, 7))
    assert checkpoint_has_class_stats(path)


def test_authors_style_checkpoint_loads_and_ours_loads_into_plain(tmp_path):
    """An authors'-layout file (DataParallel prefixes, extra keys) loads into our class-aware model;
    our class-BN checkpoint loads into a plain torchvision model (class buffers ignored)."""
    src = build_model("resnet18", 10, tiny_stem=True, class_aware=True)
    with torch.no_grad():
        src.bn1.class_running_mean.normal_()
    authors = {"model": {"module." + k: v for k, v in src.state_dict().items()}, "epoch": 49}
    path = str(tmp_path / "resnet18_tiny_0.pth")
    torch.save(authors, path)
    ours = build_model("resnet18", 10, tiny_stem=True, class_aware=True, weights=path)
    torch.testing.assert_close(ours.bn1.class_running_mean, src.bn1.class_running_mean)
    plain = build_model("resnet18", 10, tiny_stem=True, weights=path)
    torch.testing.assert_close(plain.conv1.weight, src.conv1.weight)


def test_plain_teacher_loads_into_class_aware_model(tmp_path):
    """ImageNet-1K: class statistics are added to a plain (torchvision) teacher."""
    path = str(tmp_path / "resnet18-plain.pth")
    torch.save(torchvision.models.resnet18(num_classes=7).state_dict(), path)
    model = build_model("resnet18", 7, class_aware=True, weights=path)
    assert torch.all(model.layer1[0].bn1.class_running_var == 1)
    assert not checkpoint_has_class_stats(path)


def test_mismatched_checkpoint_names_file_and_fix(tmp_path):
    path = str(tmp_path / "wrong.pth")
    save_checkpoint(path, build_model("resnet18", 10, tiny_stem=False))
    with pytest.raises(ValueError, match=r"wrong\.pth.*shape mismatch"):
        build_model("resnet18", 10, tiny_stem=True, weights=path)
    with pytest.raises(ValueError, match=r"wrong\.pth.*missing keys"):
        load_weights(build_model("resnet50", 10), path)
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        read_state_dict(str(tmp_path / "nope.pth"))
