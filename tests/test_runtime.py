"""Speed settings on the CPU (the code paths a GPU run takes): autocast, channels_last, fp32
logits, torch.compile of a student step, and hot loops free of per-step host synchronisation."""
from __future__ import annotations

import os
import sys
import time
import types

import pytest
import torch
from torch.overrides import TorchFunctionMode

from lpld.data import ImageFolder, normalization
from lpld.models import build_model
from lpld.utils.runtime import autocast, keep_logits_fp32, to_channels_last
from lpld.utils.safe_load import safe_torch_load
from lpld.validate import run_validate
from lpld.validate.distributed import DistInfo
from lpld.validate.loader import BatchInputs, PlannedBatchSampler, SoftLabelBatches, build_train_loader
from lpld.validate.optim import build_optimizer
from lpld.validate.pruning import PruningPlan
from lpld.validate.epochs import train_one_epoch

pytestmark = pytest.mark.usefixtures("one_thread")

CPU = torch.device("cpu")


def test_autocast_is_bf16_on_cpu_when_asked_and_logits_stay_fp32():
    model = build_model("resnet18", 5).eval()
    x = torch.randn(2, 3, 16, 16)
    with autocast(CPU, True):
        assert model.conv1(x).dtype == torch.bfloat16
        assert model(x).dtype == torch.bfloat16
    with autocast(CPU, False):
        assert model(x).dtype == torch.float32
    keys = list(model.state_dict())
    keep_logits_fp32(model)
    assert list(model.state_dict()) == keys  # same checkpoint layout
    with autocast(CPU, True):
        out = model(x)
    assert out.dtype == torch.float32
    with torch.no_grad():
        torch.testing.assert_close(out, model(x), rtol=0.05, atol=0.05)


def test_channels_last_gradients_equal_nchw():
    torch.manual_seed(0)
    ref = build_model("resnet18", 5).train()
    cl = to_channels_last(build_model("resnet18", 5).train(), True)
    cl.load_state_dict(ref.state_dict())
    x = torch.randn(4, 3, 16, 16)
    assert to_channels_last(x, True).is_contiguous(memory_format=torch.channels_last)
    assert cl.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    ref(x).square().mean().backward()
    cl(to_channels_last(x, True)).square().mean().backward()
    for (name, a), b in zip(ref.named_parameters(), cl.parameters()):
        # other convolution kernels: equal up to fp32 rounding (train-mode BN over 4 images amplifies it)
        assert float((b.grad - a.grad).norm() / a.grad.norm()) < 1e-3, name


# --- no host synchronisation per step ----------------------------------------------------------
HOT_LOOP_FILES = ("lpld/validate/train.py", "lpld/engine.py", "lpld/squeeze/train.py", "lpld/squeeze/class_stats.py",
                  "lpld/utils/metrics.py", "lpld/models/class_bn.py", "timm/utils")


class HostReads(TorchFunctionMode):
    """Counts reads of tensor values into Python (``.item()``, ``float()``, ``.tolist()`` ...: a
    device synchronisation on a GPU) made by the training loops' own code (not torch's: the
    optimisers' step counters live on the host)."""

    def __init__(self):
        super().__init__()
        self.calls = []

    def __torch_function__(self, func, types_, args=(), kwargs=None):
        name = getattr(func, "__name__", "")
        if name in ("item", "tolist", "__float__", "__int__", "__bool__", "__index__"):
            frame = sys._getframe(1)  # skip the Tensor dunder methods that dispatch here
            while frame is not None and frame.f_code.co_filename.replace(os.sep, "/").endswith(
                    ("torch/_tensor.py", "torch/overrides.py")):
                frame = frame.f_back
            where = frame.f_code.co_filename if frame is not None else ""
            if any(part in where.replace(os.sep, "/") for part in HOT_LOOP_FILES):
                self.calls.append(f"{name} at {where}:{frame.f_lineno}")
        return func(*args, **(kwargs or {}))


@pytest.fixture(scope="module")
def small_store(demo_root, tmp_path_factory, make_label_store):
    return make_label_store(os.path.join(demo_root, "train"), str(tmp_path_factory.mktemp("sync") / "labels"), None,
                            num_classes=4, batch_size=8, epochs=2, mix_type="cutmix")


def _reads_in_one_epoch(demo_root, store, steps: int) -> list:
    mean, std = normalization("demo")
    ds = SoftLabelBatches(ImageFolder(os.path.join(demo_root, "train")), store, 16, mean, std)
    sampler = PlannedBatchSampler(PruningPlan(store.batches_per_epoch, 2, seed=0), max_steps=steps)
    loader = build_train_loader(ds, sampler, workers=0, pin_memory=False)
    torch.manual_seed(0)
    model = build_model("resnet18", 4)
    cfg = types.SimpleNamespace(gradient_accumulation_steps=2, batch_size=8, progress=False, train_epochs=1,
                                temperature=4.0, label_smoothing=0.0, amp=False, log_batches=False, log_interval=20,
                                sgd=False, adamw_lr=1e-3, adamw_weight_decay=0.01, output_dir=".")
    opt = build_optimizer(model, cfg)
    with HostReads() as reads:
        train_one_epoch(model, None, opt, loader, CPU, cfg, "kl", 0, DistInfo(), BatchInputs(CPU, mean, std))
    return reads.calls


def test_student_loop_reads_values_once_per_epoch(demo_root, small_store):
    short, long = _reads_in_one_epoch(demo_root, small_store, 2), _reads_in_one_epoch(demo_root, small_store, 6)
    assert len(short) == len(long) <= 1, long


def test_evaluation_and_class_pass_read_values_once(demo_root):
    from lpld.engine import evaluate
    from lpld.squeeze.class_stats import record_class_statistics
    data = [(torch.randn(4, 3, 16, 16), torch.tensor([0, 1, 2, 3])) for _ in range(5)]
    model = build_model("resnet18", 4, class_aware=True)
    for batches in (2, 5):
        with HostReads() as reads:
            evaluate(model, data[:batches], CPU, progress=False)
            record_class_statistics(model, data[:batches], CPU, progress=False)
        assert len(reads.calls) <= 1, reads.calls


# --- torch.compile of the student's training step ----------------------------------------------
@pytest.mark.slow
def test_compiled_student_training_equals_eager(demo_root, small_store, tmp_path, capsys):
    base = dict(dataset="demo", train_dir=os.path.join(demo_root, "train"), label_dir=small_store.path,
                val_dir=os.path.join(demo_root, "val"), batch_size=8, epochs=2, train_epochs=1, workers=0,
                max_steps_per_epoch=3, progress=False, seed=0, adamw_lr=1e-3, temperature=4.0, device="cpu",
                model="timm/test_resnet")  # a small graph to compile: the same code path
    eager = run_validate(base | dict(output_dir=str(tmp_path / "eager")))
    t0 = time.perf_counter()
    compiled = run_validate(base | dict(output_dir=str(tmp_path / "compiled"), compile=True,
                                        compile_backend="aot_eager"))
    seconds = time.perf_counter() - t0
    with capsys.disabled():
        print(f"\n[compile] student run with torch.compile(backend='aot_eager'): {seconds:.1f} s "
              f"(3 training steps + evaluation, compile included)")
    a = safe_torch_load(tmp_path / "eager" / "checkpoint.pth", what="checkpoint")["model"]
    b = safe_torch_load(tmp_path / "compiled" / "checkpoint.pth", what="checkpoint")["model"]
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=1e-4, atol=1e-5, msg=k)
    assert compiled["val_loss"] == pytest.approx(eager["val_loss"], rel=1e-4)
