"""Squeeze stage on demo data: the teacher learns, resume continues, the class pass keeps accuracy."""
import argparse
import json
import os
import subprocess
import sys

import pytest
import torch

from lpld.config import resolve
from lpld.data import make_demo_dataset
from lpld.models import build_model, class_bn_layers, read_state_dict, save_checkpoint
from lpld.squeeze import CLASS_STATS_SCHEMA, TRAIN_SCHEMA, run_class_stats, run_teacher_training
from lpld.utils.safe_load import safe_torch_load

from conftest import REPO

ARCH = "timm/test_resnet"  # a 0.4 M-parameter ResNet: the stage's logic at a tenth of ResNet-18's cost


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("sq") / "demo")
    return make_demo_dataset(root, num_classes=4, image_size=16, train_per_class=40, val_per_class=20, seed=1)


def _cfg(schema, **kw) -> argparse.Namespace:
    base = dict(dataset="demo", model=ARCH, tiny_stem=False, image_size=16, batch_size=32,
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
    assert set(read_state_dict(metrics["teacher"])) == set(build_model(ARCH, 4).state_dict())


def test_resume_continues_from_saved_epoch(demo, tmp_path):
    run_teacher_training(_train_cfg(demo, tmp_path, epochs=1))
    state = safe_torch_load(tmp_path / "checkpoint.pth", what="checkpoint")
    assert state["epoch"] == 0
    run_teacher_training(_train_cfg(demo, tmp_path, epochs=2, resume=True))
    rows = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")]
    assert [r["epoch"] for r in rows] == [1, 2]
    assert safe_torch_load(tmp_path / "checkpoint.pth", what="checkpoint")["epoch"] == 1
    # The warm-up/cosine schedule continued where it stopped rather than restarting.
    assert rows[1]["lr"] == pytest.approx(0.05)


def test_a_warm_up_as_long_as_the_run_is_warned_about(demo, tmp_path, capsys):
    """Warm-up 1 epoch (_train_cfg): the run keeps the schedule it asked for (its one epoch at the
    warm-up's start) and says, in one warning line, that it never leaves the warm-up and what to
    change; a longer run says nothing."""
    run_teacher_training(_train_cfg(demo, tmp_path / "a", epochs=1))
    assert [json.loads(line)["lr"] for line in open(tmp_path / "a" / "metrics.jsonl")] == [pytest.approx(0.005)]
    err = capsys.readouterr().err.splitlines()
    assert [line for line in err if "warm-up" in line] == [
        "warning: warm-up of 1 epochs >= the run's 1 epochs: the whole run trains at the warm-up learning rate; "
        "lower --warmup-epochs (or the config's warmup_epochs key) or raise --epochs"]
    run_teacher_training(_train_cfg(demo, tmp_path / "b", epochs=2))
    assert "warm-up" not in capsys.readouterr().err


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
    model = build_model(ARCH, 4, class_aware=True, weights=out)
    for layer in class_bn_layers(model):
        assert not torch.allclose(layer.class_running_mean, torch.zeros_like(layer.class_running_mean))
        # Different classes have different statistics in the first layer at least.
    first = class_bn_layers(model)[0]
    assert (first.class_running_mean[0] - first.class_running_mean[1]).abs().max() > 1e-3


def test_bad_data_path_fails_at_once(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope"):
        run_teacher_training(_cfg(TRAIN_SCHEMA, dataset="tiny", data_path=str(tmp_path / "nope"),
                                  output_dir=str(tmp_path / "o")))


@pytest.mark.slow
def test_cpu_amp_channels_last_training_and_class_pass(demo, tmp_path):
    """The CUDA test's branches on the CPU: bf16 autocast and channels_last in training, evaluation
    and the class pass (which leaves the accuracy unchanged)."""
    metrics = run_teacher_training(_train_cfg(demo, tmp_path, epochs=1, amp=True, channels_last=True))
    info = run_class_stats(_cfg(CLASS_STATS_SCHEMA, data_path=demo, weights=metrics["teacher"], amp=True,
                                channels_last=True, output=str(tmp_path / "cbn.pth")))
    assert info["val_top1"] == pytest.approx(metrics["val_top1"]) and info["amp"] is True


@pytest.mark.cuda
def test_cuda_amp_channels_last_training_and_class_pass(demo, tmp_path):
    metrics = run_teacher_training(_train_cfg(demo, tmp_path, epochs=2, device="cuda", amp=True))
    info = run_class_stats(_cfg(CLASS_STATS_SCHEMA, data_path=demo, weights=metrics["teacher"], device="cuda",
                                amp=True, output=str(tmp_path / "cbn.pth")))
    assert info["val_top1"] == pytest.approx(metrics["val_top1"])


# --- the class-statistics pass: fp32 by default, bf16 only when asked ---------------------------------
def _reference_class_stats(model, loader, reference_update):
    """fp32 reference: every BN input captured by a hook, the authors' per-class update in float64."""
    layers = class_bn_layers(model)
    stats = {m: (m.class_running_mean.double().clone(), m.class_running_var.double().clone()) for m in layers}
    seen = {}
    hooks = [m.register_forward_pre_hook(lambda mod, args: seen.__setitem__(mod, args[0].detach().double()))
             for m in layers]
    model.eval()
    with torch.no_grad():
        for images, target in loader:
            model(images)
            for m in layers:
                stats[m] = reference_update(*stats[m], seen[m], target, m.momentum)
    for h in hooks:
        h.remove()
    return [stats[m] for m in layers]


def _class_pass(demo, tmp_path, **kw):
    """The class-statistics pass with the schema's defaults (the settings here name no ``amp``)."""
    out = str(tmp_path / f"cbn_{len(os.listdir(tmp_path))}.pth")
    plain = str(tmp_path / "plain.pth")
    if not os.path.exists(plain):
        torch.manual_seed(0)
        save_checkpoint(plain, build_model(ARCH, 4))
    settings = dict(dataset="demo", data_path=demo, model=ARCH, tiny_stem=False, image_size=16, batch_size=32,
                    workers=0, device="cpu", progress=False, weights=plain, output=out, check_unchanged=False)
    cfg = resolve(CLASS_STATS_SCHEMA, [("test", settings | kw)])
    run_class_stats(cfg)
    return class_bn_layers(build_model(ARCH, 4, class_aware=True, weights=out)), plain, cfg


@pytest.mark.slow
def test_class_pass_defaults_to_fp32_and_bf16_is_opt_in(demo, tmp_path, class_update_reference):
    from lpld.data import build_dataset, train_transform
    from lpld.data.sampling import SeededEpochSampler
    from lpld.squeeze.train import build_loader
    fp32_layers, plain, cfg = _class_pass(demo, tmp_path)
    assert cfg.amp is False
    # the pass's loader, rebuilt: the same seeded order and augmentation
    data = build_dataset("demo", demo, "train", train_transform(16, "demo"))
    loader = build_loader(data, cfg, torch.device("cpu"), shuffle=True, sampler=SeededEpochSampler(len(data), cfg.seed))
    reference = _reference_class_stats(build_model(ARCH, 4, class_aware=True, weights=plain), loader,
                                        class_update_reference)
    for layer, (mean, var) in zip(fp32_layers, reference):
        torch.testing.assert_close(layer.class_running_mean.double(), mean, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(layer.class_running_var.double(), var, rtol=1e-5, atol=1e-5)
    bf16_layers, _, _ = _class_pass(demo, tmp_path, amp=True)
    errors = [float((b.class_running_mean - a.class_running_mean).norm() / a.class_running_mean.norm())
              for a, b in zip(fp32_layers, bf16_layers)]
    assert 1e-5 < max(errors) < 2e-2, errors  # bf16 really ran, and its error stays bounded


@pytest.mark.slow
def test_resume_with_workers_equals_an_uninterrupted_run(demo, tmp_path, interrupt_at_epoch):
    """Persistent DataLoader workers draw their seeds once per run: the augmentation must not depend
    on them, or the epochs after a resume would see other crops than an uninterrupted run."""
    from lpld.squeeze import train as train_mod
    kw = dict(epochs=2, workers=2)
    run_teacher_training(_train_cfg(demo, tmp_path / "a", **kw))
    interrupt_at_epoch(train_mod, lambda: run_teacher_training(_train_cfg(demo, tmp_path / "b", **kw)))
    run_teacher_training(_train_cfg(demo, tmp_path / "b", resume=True, **kw))
    a, b = read_state_dict(str(tmp_path / "a" / "teacher.pth")), read_state_dict(str(tmp_path / "b" / "teacher.pth"))
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_teacher_schedule_is_the_authors_recipe():
    """SRe2L's squeeze command (--lr 0.2 --lr-warmup-epochs 5 --lr-warmup-decay 0.01, cosine over
    the remaining epochs), stepped once per epoch as torchvision's reference does."""
    import math

    from lpld.utils.schedule import warmup_cosine
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.2)
    sched = warmup_cosine(opt, 50, 5, 0.01)
    lrs = []
    for _ in range(50):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    expected = [0.2 * (0.01 + 0.99 * e / 5) for e in range(5)]
    expected += [0.2 * 0.5 * (1 + math.cos(math.pi * (e - 5) / 45)) for e in range(5, 50)]
    assert lrs == pytest.approx(expected, abs=1e-9)


# --- squeeze/scripts/tiny.sh --------------------------------------------------------------------------
FAKE_PYTHON = """#!{python}
import json, os, sys
if sys.argv[1:2] == ["-c"]:  # the script's own helper: the real interpreter
    os.execv({python!r}, [{python!r}] + sys.argv[1:])
with open(os.environ["CALLS"], "a") as f:
    f.write(json.dumps(sys.argv[1:]) + "\\n")
"""


def _tiny_sh_calls(tmp_path, *args) -> dict[str, list[str]]:
    """tiny.sh with a ``python`` on PATH that records each stage's command line (and runs none)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(parents=True)
    (bin_dir / "python").write_text(FAKE_PYTHON.format(python=sys.executable))
    (bin_dir / "python").chmod(0o755)
    calls = tmp_path / "calls.jsonl"
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "PYTHONPATH": REPO,
           "CALLS": str(calls), "DATA": str(tmp_path / "data"), "OUT": str(tmp_path / "out"),
           "CLASS_BN": str(tmp_path / "class_bn.pth")}
    proc = subprocess.run(["bash", os.path.join(REPO, "squeeze", "scripts", "tiny.sh"), *args], env=env, cwd="/",
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    steps = [json.loads(line) for line in calls.read_text().splitlines()]
    assert [argv[0] for argv in steps] == ["squeeze/train.py", "squeeze/class_stats.py"]
    return dict(zip(("train", "class_stats"), steps))


def test_tiny_sh_gives_the_model_and_data_flags_to_both_steps(tmp_path):
    """Every extra flag reaches training; those class_stats.py shares with it (spelled as training
    reads them: --flag=value, --no-flag, a prefix) reach the class pass too, so it builds the model
    that was trained. --epochs, --amp (the class pass has its own) and --config stay with training."""
    extra = ["--model", "timm/resnet50", "--epochs", "3", "--image-size=32", "--no-tiny-stem", "--amp",
             "--num-cl", "7", "--config", "squeeze/configs/tiny.yaml", "squeeze/configs/tiny_train.yaml"]
    calls = _tiny_sh_calls(tmp_path, *extra)
    assert calls["train"][-len(extra):] == extra
    assert calls["class_stats"] == _class_stats_own(tmp_path) + ["--model", "timm/resnet50", "--no-tiny-stem",
                                                                 "--num-classes", "7", "--image-size", "32"]
    # no extra flags: the class pass's command line as before
    assert _tiny_sh_calls(tmp_path / "plain")["class_stats"] == _class_stats_own(tmp_path / "plain")


def _class_stats_own(root) -> list[str]:
    """The class pass's command line in tiny.sh, before the shared flags."""
    return ["squeeze/class_stats.py", "--config", "squeeze/configs/tiny.yaml", "--data-path", str(root / "data"),
            "--weights", str(root / "out" / "teacher.pth"), "--output", str(root / "class_bn.pth")]
