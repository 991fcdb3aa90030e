"""CPU counterparts of the recover stage's CUDA tests: the same branches (channels_last, bf16
autocast, torch.compile, a whole run with AMP) on the CPU, so CI executes them."""
from __future__ import annotations

import os
import sys
import time

import pytest
import torch

sys.path.insert(0, os.path.dirname(__file__))
from test_recover import NUM_CLASSES, SIZE, make_cfg, settings, teacher_path  # noqa: E402,F401

from lpld.data import ImageFolder  # noqa: E402
from lpld.models import build_model  # noqa: E402
from lpld.recover import AugmentParams, Group, Recoverer, run_recovery  # noqa: E402

CPU = torch.device("cpu")


def _run(teacher, **over):
    s = settings(iterations=40, lr=0.2, **over)
    groups = [Group(key=(0, c, 0), labels=[c] * 4, bn_class=c) for c in range(NUM_CLASSES)]
    rec = Recoverer(teacher, s, "class", CPU)
    try:
        return rec.run(groups)
    finally:
        rec.close()


def test_batched_gradients_equal_single_class_channels_last(teacher_path):
    model = build_model("resnet18", NUM_CLASSES, class_aware=True, weights=teacher_path).eval()
    rec = Recoverer(model, settings(channels_last=True), "class", CPU)
    assert rec.channels_last and next(rec.teacher.parameters()).is_contiguous(memory_format=torch.channels_last)
    try:
        classes, n = [1, 2], 3
        x = torch.randn(len(classes) * n, 3, SIZE, SIZE)
        p = AugmentParams(1, 1, 12, 13, True, 1, 2)
        rec.matcher.set_targets(2, torch.tensor(classes))
        xb = x.clone().requires_grad_(True)
        rec.step_loss(xb, torch.tensor([1] * n + [2] * n), 2, [p])[0].backward()
        for k, c in enumerate(classes):
            rec.matcher.set_targets(1, torch.tensor([c]))
            xs = x[k * n:(k + 1) * n].clone().requires_grad_(True)
            rec.step_loss(xs, torch.full((n,), c), 1, [p])[0].backward()
            torch.testing.assert_close(xb.grad[k * n:(k + 1) * n], xs.grad, rtol=1e-3, atol=1e-5)
    finally:
        rec.close()


@pytest.mark.slow
def test_bf16_channels_last_reaches_fp32_quality(teacher_path):
    model = build_model("resnet18", NUM_CLASSES, class_aware=True, weights=teacher_path).eval()
    fp32 = _run(model, amp=False, channels_last=False)
    bf16 = _run(model, amp=True, channels_last=True)
    assert fp32.correct.float().mean() >= 0.9 and bf16.correct.float().mean() >= 0.9
    assert abs(float(bf16.bn.mean()) - float(fp32.bn.mean())) <= 0.15 * float(fp32.bn.mean())
    assert float(bf16.ce.mean()) <= float(fp32.ce.mean()) + 0.1


def test_compiled_teacher_gives_the_same_loss_and_gradients(teacher_path, capsys):
    model = build_model("resnet18", NUM_CLASSES, class_aware=True, weights=teacher_path).eval()
    eager = Recoverer(model, settings(), "class", CPU)
    compiled = Recoverer(model, settings(), "class", CPU, compile_model="aot_eager")
    try:
        x = torch.randn(6, 3, SIZE, SIZE)
        labels = torch.tensor([0] * 3 + [3] * 3)
        p = AugmentParams(0, 0, SIZE, SIZE, False, 1, 1)
        for rec in (eager, compiled):
            rec.matcher.set_targets(2, torch.tensor([0, 3]))
        xa = x.clone().requires_grad_(True)
        a = eager.step_loss(xa, labels, 2, [p])[0]
        a.backward()
        eager.close()  # only the compiled recoverer's hooks remain
        xb = x.clone().requires_grad_(True)
        t0 = time.perf_counter()
        b = compiled.step_loss(xb, labels, 2, [p])[0]
        b.backward()
        with capsys.disabled():
            print(f"\n[compile] recover step with torch.compile(backend='aot_eager'), first call: "
                  f"{time.perf_counter() - t0:.1f} s")
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(xa.grad, xb.grad, rtol=1e-3, atol=1e-6)
    finally:
        compiled.close()


def test_run_recovery_with_amp(teacher_path, tmp_path):
    root = run_recovery(make_cfg(teacher_path, str(tmp_path), device="cpu", amp=True, compile=False))
    assert len(ImageFolder(root)) == NUM_CLASSES * 3
