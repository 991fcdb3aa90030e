"""Class-aware BatchNorm: the vectorised update equals a straightforward per-class loop."""
import time

import pytest
import torch
from torch import nn

from lpld.models import (ClassAwareBatchNorm2d, build_model, class_labels, finalize_exact_class_stats,
                         per_class_mean_var, set_class_stats_mode)
from lpld.models.class_bn import image_var_mean


def test_vectorised_update_matches_per_class_loop(class_update_reference):
    torch.manual_seed(0)
    num_classes, channels = 60, 8
    bn = ClassAwareBatchNorm2d(channels, num_classes).eval()
    ref_mean, ref_var = bn.class_running_mean.clone(), bn.class_running_var.clone()
    for step in range(3):
        # many classes, several absent, class 7 with a single image, uneven group sizes
        labels = torch.cat([torch.randint(10, 40, (37,)), torch.tensor([7])])
        x = torch.randn(labels.numel(), channels, 5, 6) * 3 + step
        bn.class_labels = labels
        out = bn(x)
        bn.class_labels = None
        ref_mean, ref_var = class_update_reference(ref_mean, ref_var, x, labels, 0.1)
        assert torch.allclose(out, nn.functional.batch_norm(x, bn.running_mean, bn.running_var, bn.weight,
                                                            bn.bias, False, 0.1, bn.eps))
    torch.testing.assert_close(bn.class_running_mean, ref_mean, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(bn.class_running_var, ref_var, rtol=1e-5, atol=1e-5)
    untouched = [c for c in range(num_classes) if c != 7 and not (10 <= c < 40)]
    assert torch.all(bn.class_running_mean[untouched] == 0)
    assert torch.all(bn.class_running_var[untouched] == 1)
    assert not torch.all(bn.class_running_mean[7] == 0)


def test_no_update_in_training_mode_or_without_labels():
    bn = ClassAwareBatchNorm2d(4, 3)
    x = torch.randn(6, 4, 3, 3)
    bn.train()
    bn.class_labels = torch.tensor([0, 1, 2, 0, 1, 2])
    bn(x)
    bn.eval()
    bn.class_labels = None
    bn(x)
    assert torch.all(bn.class_running_mean == 0) and torch.all(bn.class_running_var == 1)


def test_per_class_mean_var_matches_direct():
    torch.manual_seed(1)
    x = torch.randn(20, 3, 4, 4)
    labels = torch.randint(0, 5, (20,))
    mean, var, counts = per_class_mean_var(x, labels, 6)
    for c in range(6):
        xc = x[labels == c]
        assert counts[c] == len(xc)
        if len(xc):
            torch.testing.assert_close(mean[c], xc.mean((0, 2, 3)))
            torch.testing.assert_close(var[c], xc.transpose(0, 1).reshape(3, -1).var(1, unbiased=False))


@pytest.mark.parametrize("offset, scale", [(5.0, 3.0), (100.0, 0.01), (0.0, 1e-3)])
def test_image_var_mean_is_stable_in_any_memory_format(offset, scale):
    """Per-image statistics against float64, also for a mean 10^4 standard deviations away from 0
    (where E[x^2] - E[x]^2 in float32 would lose every digit)."""
    torch.manual_seed(4)
    x = torch.randn(16, 8, 16, 16) * scale + offset
    ref_var, ref_mean = torch.var_mean(x.double(), dim=(2, 3), unbiased=False)
    for layout in (x, x.to(memory_format=torch.channels_last)):
        var, mean = image_var_mean(layout)
        assert var.shape == mean.shape == (16, 8) and var.dtype == mean.dtype == torch.float32
        torch.testing.assert_close(var.double(), ref_var, rtol=1e-5, atol=0)
        torch.testing.assert_close(mean.double(), ref_mean, rtol=1e-6, atol=1e-6 * scale)


def test_class_update_costs_a_few_batchnorms_on_the_cpu():
    """The update runs at every BatchNorm of the class-statistics pass: at a few times an eval-mode
    BatchNorm of the same input the pass stays close to a plain forward. (torch.var_mean over
    (H, W) on the CPU cost 15-35x one, which made the pass of a small model half as fast.)"""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        torch.manual_seed(5)
        x, labels = torch.randn(64, 32, 16, 16), torch.randint(0, 20, (64,))
        mean, var = torch.zeros(32), torch.ones(32)
        best = {"bn": float("inf"), "update": float("inf")}
        for _ in range(15):  # interleaved, best of each: robust to a busy machine
            for name, step in (("bn", lambda: nn.functional.batch_norm(x, mean, var, training=False)),
                               ("update", lambda: per_class_mean_var(x, labels, 20))):
                t0 = time.perf_counter()
                step()
                best[name] = min(best[name], time.perf_counter() - t0)
    finally:
        torch.set_num_threads(threads)
    assert best["update"] < 8 * best["bn"], best


def exact_reference(x, labels, num_classes):
    """Count-weighted statistics of the whole pass, one class at a time in float64: the mean and
    biased variance of all of a class's values; absent classes keep the initial 0 / 1."""
    mean = torch.zeros(num_classes, x.shape[1], dtype=torch.float64)
    var = torch.ones(num_classes, x.shape[1], dtype=torch.float64)
    for c in labels.unique().tolist():
        values = x[labels == c].double().transpose(0, 1).reshape(x.shape[1], -1)
        mean[c] = values.mean(1)
        var[c] = ((values - mean[c][:, None]) ** 2).mean(1)
    return mean.float(), var.float()


def test_exact_mode_is_the_count_weighted_statistics_in_any_order():
    torch.manual_seed(2)
    x = torch.randn(30, 5, 4, 4) * 2 + 1
    labels = torch.randint(0, 4, (30,))  # class 4 of 5 never appears
    ref_mean, ref_var = exact_reference(x, labels, 5)
    for order in (torch.arange(30), torch.randperm(30)):
        bn = ClassAwareBatchNorm2d(5, 5).eval()
        bn.stats_mode = "exact"
        for chunk in order.split(7):  # uneven chunks: 7, 7, 7, 7, 2
            bn.class_labels = labels[chunk]
            bn(x[chunk])
        bn.finalize_exact()
        torch.testing.assert_close(bn.class_running_mean, ref_mean, rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(bn.class_running_var, ref_var, rtol=1e-6, atol=1e-6)
        assert torch.all(bn.class_running_mean[4] == 0) and torch.all(bn.class_running_var[4] == 1)


def test_model_context_manager_updates_every_layer_and_keeps_outputs(class_update_reference):
    torch.manual_seed(3)
    model = build_model("resnet18", 5, tiny_stem=True, class_aware=True).eval()
    plain = build_model("resnet18", 5, tiny_stem=True).eval()
    plain.load_state_dict(model.state_dict(), strict=False)
    x, y = torch.randn(4, 3, 16, 16), torch.tensor([0, 0, 3, 4])
    with torch.no_grad(), class_labels(model, y):
        out = model(x)
    torch.testing.assert_close(out, plain(x))
    layers = [m for m in model.modules() if isinstance(m, ClassAwareBatchNorm2d)]
    assert len(layers) == 20
    for layer in layers:
        assert torch.all(layer.class_running_mean[1:3] == 0)
        assert not torch.all(layer.class_running_mean[[0, 3, 4]] == 0)
    # exact mode: the count-weighted statistics of exactly this pass, per class present; the
    # classes absent from it keep what the EMA pass above left
    before = [(m.class_running_mean.clone(), m.class_running_var.clone()) for m in layers]
    inputs = {}
    hooks = [m.register_forward_pre_hook(lambda mod, args: inputs.__setitem__(mod, args[0].detach()))
             for m in layers]
    set_class_stats_mode(model, "exact")
    with torch.no_grad(), class_labels(model, y):
        model(x)
    finalize_exact_class_stats(model)
    for h in hooks:
        h.remove()
    for layer, (mean0, var0) in zip(layers, before):
        ref_mean, ref_var = class_update_reference(mean0, var0, inputs[layer].double(), y, momentum=1.0)
        torch.testing.assert_close(layer.class_running_mean, ref_mean.float(), rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(layer.class_running_var, ref_var.float(), rtol=1e-5, atol=1e-6)
        assert torch.equal(layer.class_running_mean[1:3], mean0[1:3])


def test_conversion_keeps_the_training_mode():
    """A model converted in eval mode records class statistics at once (not ordinary BN statistics)."""
    from lpld.models import convert_to_class_aware
    model = convert_to_class_aware(nn.Sequential(nn.BatchNorm2d(2), nn.Sequential(nn.BatchNorm2d(2))).eval(), 3)
    assert all(isinstance(m, ClassAwareBatchNorm2d) and not m.training for m in (model[0], model[1][0]))
    with torch.no_grad(), class_labels(model, torch.tensor([0, 2])):
        model(torch.randn(2, 2, 3, 3))
    assert torch.all(model[0].running_mean == 0) and not torch.all(model[0].class_running_mean[0] == 0)
    assert convert_to_class_aware(nn.Sequential(nn.BatchNorm2d(2)), 3)[0].training


def test_labels_out_of_range_are_rejected():
    model = nn.Sequential(ClassAwareBatchNorm2d(2, 3)).eval()
    with pytest.raises(ValueError, match=r"\[0, 3\)"):
        with class_labels(model, torch.tensor([0, 3])):
            model(torch.randn(2, 2, 2, 2))


def test_context_manager_needs_class_aware_model():
    with pytest.raises(ValueError, match="class_aware=True"):
        with class_labels(nn.Sequential(nn.BatchNorm2d(2)), torch.tensor([0])):
            pass
