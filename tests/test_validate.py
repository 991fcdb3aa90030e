"""Student training (validate stage): loss, schedule, config, store checks, DDP slicing, resume."""
from __future__ import annotations

import json
import math
import os

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lpld.augment import replay_batch
from lpld.config import ConfigError, load_yaml, parse_config, resolve
from lpld.data import load_rgb, normalization
from lpld.labels import StoreMismatchError, open_label_store
from lpld.utils.safe_load import safe_torch_load
from lpld.validate import VALIDATE_SCHEMA, run_validate
from lpld.validate import train as train_mod
from lpld.validate.loader import rank_rows, rank_subrecord
from lpld.validate.loss import kd_loss
from lpld.validate.optim import ModelEma, build_optimizer, build_scheduler, param_groups

pytestmark = pytest.mark.usefixtures("one_thread")

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = os.path.join(REPO, "relabel_and_validate", "configs")


# --- loss -----------------------------------------------------------------------------------------
def test_kd_loss_matches_the_authors_formulas():
    torch.manual_seed(0)
    s, t, T = torch.randn(6, 10), torch.randn(6, 10), 20.0
    plain = nn.KLDivLoss(reduction="batchmean")(F.log_softmax(s / T, 1), F.softmax(t / T, 1))
    tiny = nn.KLDivLoss(reduction="batchmean", log_target=True)(F.log_softmax(s / T, 1), F.log_softmax(t / T, 1)) * T ** 2
    torch.testing.assert_close(kd_loss(s, t, T, "kl"), plain)
    torch.testing.assert_close(kd_loss(s, t, T, "kl_t2"), tiny)
    torch.testing.assert_close(kd_loss(s, t, T, "kl_t2"), plain * T ** 2, rtol=1e-4, atol=1e-6)
    # label smoothing on the stored logits (authors' in21k), before the softmax
    smoothed = (1 - 0.2) * t + 0.2 / 10
    torch.testing.assert_close(kd_loss(s, t, T, "kl", 0.2), kd_loss(s, smoothed, T, "kl"))
    assert float(kd_loss(t, t, T, "kl")) == pytest.approx(0.0, abs=1e-6)


def test_accumulated_chunks_reproduce_the_full_batch_loss_and_gradient():
    torch.manual_seed(0)
    model = nn.Linear(8, 5)
    x, t = torch.randn(12, 8), torch.randn(12, 5)
    kd_loss(model(x), t, 4.0, "kl").backward()
    full = model.weight.grad.clone()
    model.zero_grad()
    for sl in (slice(0, 4), slice(4, 8), slice(8, 12)):  # the trainer's weighting of each chunk
        (kd_loss(model(x[sl]), t[sl], 4.0, "kl") * (4 / 12)).backward()
    torch.testing.assert_close(model.weight.grad, full)


# --- optimiser and schedule -------------------------------------------------------------------------
class Cfg:
    def __init__(self, **kw):
        self.__dict__.update(dict(cos=True, sgd=False, epochs=10, train_epochs=10, smoothing_lr=False,
                                  smoothing_lr_strength=2.0, learning_rate=1.0, momentum=0.9, weight_decay=0.0,
                                  adamw_lr=1.0, adamw_weight_decay=0.0) | kw)


def epoch_lrs(cfg, dataset, epochs=None):
    """The LR of each epoch as the trainer sees it: read at the epoch start, stepped after it."""
    opt = build_optimizer(nn.Linear(1, 1), cfg)
    sched = build_scheduler(opt, cfg, dataset)
    out = []
    for _ in range(epochs or cfg.train_epochs):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return out


def test_lr_schedules_are_the_authors():
    """Pinned to the formulas of the authors' train_FKD_label_pruning_batch.py."""
    # Tiny-ImageNet, --cos --sgd: LinearLR(0.01, 5 epochs), then CosineAnnealingLR(T_max = epochs - 5)
    tiny = [0.01 + 0.99 * e / 5 for e in range(5)] + [0.5 * (1 + math.cos(math.pi * e / 5)) for e in range(5)]
    assert epoch_lrs(Cfg(sgd=True), "tiny") == pytest.approx(tiny, abs=1e-9)
    # --cos: LambdaLR(0.5 * (1 + cos(pi * step / train_epochs)))
    cos = [0.5 * (1 + math.cos(math.pi * e / 10)) for e in range(10)]
    assert epoch_lrs(Cfg(), "imagenet") == pytest.approx(cos, abs=1e-9)
    assert epoch_lrs(Cfg(sgd=True), "imagenet") == pytest.approx(cos, abs=1e-9)
    # --cos --smoothing_lr: the cosine argument divided by smoothing_lr_strength
    smooth = [0.5 * (1 + math.cos(math.pi * e / 10 / 2)) for e in range(10)]
    assert epoch_lrs(Cfg(smoothing_lr=True), "imagenet") == pytest.approx(smooth, abs=1e-9)
    # no --cos: SRe2L's linear decay 1 - step / train_epochs; train_epochs < epochs shortens it
    assert epoch_lrs(Cfg(cos=False), "imagenet") == pytest.approx([1 - e / 10 for e in range(10)], abs=1e-9)
    assert epoch_lrs(Cfg(cos=False, train_epochs=4), "imagenet") == pytest.approx([1.0, 0.75, 0.5, 0.25])


def test_a_run_no_longer_than_the_warm_up_is_warned_about(capsys):
    """Tiny-ImageNet --cos --sgd warms up for 5 epochs: a run of 5 or fewer trains only in the
    warm-up. The schedule stays the authors'; one warning line says so and names the fix."""
    warm = [0.01 + 0.99 * e / 5 for e in range(5)]
    assert epoch_lrs(Cfg(sgd=True, epochs=5, train_epochs=5), "tiny") == pytest.approx(warm, abs=1e-9)
    assert epoch_lrs(Cfg(sgd=True, epochs=300, train_epochs=3), "tiny") == pytest.approx(warm[:3], abs=1e-9)
    err = capsys.readouterr().err.splitlines()
    assert [line for line in err if "warm-up" in line] == [
        "warning: warm-up of 5 epochs >= the run's 5 epochs: the whole run trains at the warm-up learning rate; "
        "raise --train-epochs (or --epochs, which it follows when unset) above 5, or leave out --cos",
        "warning: warm-up of 5 epochs >= the run's 3 epochs: the whole run trains at the warm-up learning rate; "
        "raise --train-epochs (or --epochs, which it follows when unset) above 5, or leave out --cos"]
    epoch_lrs(Cfg(sgd=True, epochs=6, train_epochs=6), "tiny")  # one epoch after the warm-up
    epoch_lrs(Cfg(sgd=True, epochs=3, train_epochs=3), "imagenet")  # no warm-up there
    assert "warm-up" not in capsys.readouterr().err


def test_schedule_resumes_from_its_state_dict():
    cfg = Cfg(sgd=True)
    opt = build_optimizer(nn.Linear(1, 1), cfg)
    sched = build_scheduler(opt, cfg, "tiny")
    for _ in range(7):
        opt.step()
        sched.step()
    opt2 = build_optimizer(nn.Linear(1, 1), cfg)
    sched2 = build_scheduler(opt2, cfg, "tiny")
    opt2.load_state_dict(opt.state_dict())
    sched2.load_state_dict(sched.state_dict())
    assert opt2.param_groups[0]["lr"] == pytest.approx(epoch_lrs(cfg, "tiny")[7], abs=1e-12)


def authors_get_parameters(model):
    """The authors' utils.get_parameters: decay on parameters named 'weight' with more than one dimension."""
    decay = [p for n, p in model.named_parameters() if "weight" in n and p.ndim > 1]
    return {id(p) for p in decay}, {id(p) for p in model.parameters()} - {id(p) for p in decay}


@pytest.mark.parametrize("arch", ["resnet18", "mobilenet_v2", "efficientnet_b0", "timm/resnet18"])
def test_weight_decay_groups_are_the_authors(arch):
    from lpld.models import build_model
    model = build_model(arch, 10)
    groups = param_groups(model, 0.01)
    decay = {id(p) for g in groups if g["weight_decay"] for p in g["params"]}
    no_decay = {id(p) for g in groups if not g["weight_decay"] for p in g["params"]}
    assert (decay, no_decay) == authors_get_parameters(model)
    assert [g["weight_decay"] for g in groups] == [0.0, 0.01]


def test_ema_follows_the_ema_pytorch_schedule():
    model = nn.Linear(1, 1, bias=False)
    ema = ModelEma(model, beta=0.99)
    seen = []
    for step in range(131):
        with torch.no_grad():
            model.weight.fill_(float(step))
        ema.step(model)
        seen.append(float(ema.module.weight))
    # calls 0, 10, ..., 100 copy the weights, the others change nothing
    assert seen[:101] == [float(s - s % 10) for s in range(101)]
    # call 110 averages with decay min(0.99, 1 - (1 + 10)^(-2/3)); call 120 with n = 20
    d110 = min(0.99, 1 - (1 + 10) ** (-2 / 3))
    assert seen[110] == pytest.approx(100 * d110 + 110 * (1 - d110))
    d120 = min(0.99, 1 - (1 + 20) ** (-2 / 3))
    assert seen[120] == pytest.approx(seen[110] * d120 + 120 * (1 - d120))
    state = ema.checkpoint()
    again = ModelEma(nn.Linear(1, 1, bias=False))
    again.restore(state)
    assert again.calls == 131 and float(again.module.weight) == seen[-1]


# --- configuration --------------------------------------------------------------------------------
def read(name, **cli):
    argv = ["--config", os.path.join(CONFIGS, name)] + [f"--{k.replace('_', '-')}={v}" for k, v in cli.items()]
    return parse_config(VALIDATE_SCHEMA, argv, sections=("common", "validate"))


def test_shipped_configs_hold_the_authors_values():
    tiny = read("tiny.yaml")
    assert (tiny.dataset, tiny.batch_size, tiny.epochs, tiny.sgd, tiny.cos) == ("tiny", 64, 100, True, True)
    assert (tiny.learning_rate, tiny.momentum, tiny.weight_decay, tiny.temperature) == (0.2, 0.9, 1e-4, 20.0)
    in1k = read("imagenet1k.yaml")
    assert (in1k.dataset, in1k.batch_size, in1k.epochs, in1k.sgd, in1k.cos) == ("imagenet1k", 128, 300, False, True)
    assert (in1k.adamw_lr, in1k.adamw_weight_decay, in1k.temperature, in1k.mix_type) == (1e-3, 0.01, 20.0, "cutmix")
    in21k = read("in21k.yaml")
    assert (in21k.batch_size, in21k.num_classes, in21k.adamw_lr, in21k.label_smoothing) == (32, 10450, 0.002, 0.2)
    assert in21k.val_interval == 50
    for cfg in (tiny, in1k, in21k):
        assert (cfg.prune_ratio, cfg.prune_metric, cfg.granularity) == (0.975, "random", "batch_to_epoch")
    assert read("tiny.yaml", prune_ratio=0.9).prune_ratio == 0.9  # command line wins


def test_the_authors_yaml_reads_unchanged(tmp_path):
    text = """common:
  basic: {dataset: tiny, batch_size: 64, workers: 8, epochs: 100}
relabel:
  basic: {model: resnet18, fkd_seed: 42, input_size: 64, min_scale_crops: 0.08, max_scale_crops: 1, mode: fkd_save}
  store_true: [use_fp16]
validate:
  basic: {gradient_accumulation_steps: 1, temperature: 20, learning_rate: 0.2, momentum: 0.9, weight_decay: 0.0001}
  store_true: [cos, sgd]
  path: {val_dir: ../recover/tiny_forward/data/tiny-imagenet-200/val}
  aim: {tag_name: LPLD_tiny}
"""
    path = tmp_path / "LPLD_tiny_[4k].yaml"
    path.write_text(text)
    cfg = resolve(VALIDATE_SCHEMA, [(str(path), load_yaml(str(path), ("common", "validate")))])
    assert cfg.temperature == 20.0 and cfg.sgd and cfg.val_dir.endswith("tiny-imagenet-200/val")
    in21k = tmp_path / "LPLD_in21k_[2k].yaml"
    in21k.write_text("""common:
  basic: {dataset: imagenet21k, batch_size: 32, epochs: 300, workers: 8, num_classes: 10450}
  path: {teacher_ckpt: ../recover/model_with_class_bn/resnet18_21k_0.pth}
validate:
  basic: {gradient_accumulation_steps: 1, mix_type: None, temperature: 20, adamw_lr: 0.002,
          adamw_decay: 0.01, label_smoothing: 0.2}
  store_true: [cos]
""")
    cfg = resolve(VALIDATE_SCHEMA, [(str(in21k), load_yaml(str(in21k), ("common", "validate")))])
    assert (cfg.adamw_lr, cfg.adamw_weight_decay, cfg.label_smoothing, cfg.mix_type) == (0.002, 0.01, 0.2, "None")


def test_bad_configs_name_the_key_and_the_file(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("validate:\n  basic:\n    temprature: 20\n")
    with pytest.raises(SystemExit):
        parse_config(VALIDATE_SCHEMA, ["--config", str(bad)], sections=("common", "validate"))
    err = capsys.readouterr().err
    assert "temprature" in err and str(bad) in err
    bad.write_text("common:\n  basic:\n    batch_size: sixty-four\n")
    with pytest.raises(SystemExit):
        parse_config(VALIDATE_SCHEMA, ["--config", str(bad)], sections=("common", "validate"))
    err = capsys.readouterr().err
    assert "batch_size" in err and "int" in err and str(bad) in err
    with pytest.raises(ConfigError, match="prune_metric"):
        run_validate(dict(train_dir="a", label_dir="b", val_dir="c", prune_metric="margin"))
    with pytest.raises(ConfigError, match="label_dir"):
        run_validate(dict(train_dir="a", val_dir="c"))


# --- data: stores, slicing --------------------------------------------------------------------------
@pytest.fixture(scope="module")
def store(demo_root, tmp_path_factory, make_label_store):
    return make_label_store(os.path.join(demo_root, "train"), str(tmp_path_factory.mktemp("v") / "labels"),
                            None, num_classes=4, batch_size=8, epochs=3, mix_type="cutmix")


def base_cfg(demo_root, store, out, **kw):
    return dict(dataset="demo", train_dir=os.path.join(demo_root, "train"), label_dir=store.path,
                val_dir=os.path.join(demo_root, "val"), batch_size=8, epochs=3, workers=0, output_dir=str(out),
                temperature=4.0, val_interval=1, progress=False, seed=0) | kw


@pytest.mark.parametrize("mix", ["cutmix", "mixup"])
def test_rank_slices_equal_the_rows_of_the_full_replay(demo_root, tmp_path, mix, make_label_store):
    st = make_label_store(os.path.join(demo_root, "train"), str(tmp_path / mix), None, num_classes=4,
                          batch_size=8, epochs=1, mix_type=mix)
    from lpld.data import ImageFolder
    images = ImageFolder(os.path.join(demo_root, "train"))
    load = lambda i: load_rgb(images.samples[i][0])  # noqa: E731
    mean, std = normalization("demo")
    record = st.read(2)
    full = replay_batch(load, record, 16, mean, std)
    seen = []
    for rank in range(3):
        rows = rank_rows(record.batch_size, rank, 3)
        sub, keep = rank_subrecord(record, rows)
        assert sub.batch_size < record.batch_size or mix == "mixup"
        torch.testing.assert_close(replay_batch(load, sub, 16, mean, std)[keep], full[rows], rtol=0, atol=0)
        seen += rows.tolist()
    assert sorted(seen) == list(range(8))


def test_mismatched_label_stores_fail_clearly(demo_root, store, tmp_path, make_label_store):
    with pytest.raises(StoreMismatchError, match="batch size 8.*batch size 16"):
        run_validate(base_cfg(demo_root, store, tmp_path, batch_size=16))
    with pytest.raises(StoreMismatchError, match="mix_type 'cutmix'.*'mixup'"):
        run_validate(base_cfg(demo_root, store, tmp_path, mix_type="mixup"))
    with pytest.raises(StoreMismatchError, match="5 classes|over 4 classes"):
        run_validate(base_cfg(demo_root, store, tmp_path, num_classes=5))
    # a store pruned at 0.5 cannot serve an unpruned run
    pruned = make_label_store(os.path.join(demo_root, "train"), str(tmp_path / "p50"), None, num_classes=4,
                              batch_size=8, epochs=3, prune_ratio=0.5)
    with pytest.raises(StoreMismatchError, match="needs stored batches 0..17.*holds 9"):
        run_validate(base_cfg(demo_root, pruned, tmp_path, prune_ratio=0.0))
    # labels made for another image folder
    other = tmp_path / "other"
    for c in ("class00", "class01"):
        (other / c).mkdir(parents=True)
        for k in range(3):
            src = os.path.join(demo_root, "train", c, sorted(os.listdir(os.path.join(demo_root, "train", c)))[k])
            (other / c / f"{k}.png").write_bytes(open(src, "rb").read())
    with pytest.raises(StoreMismatchError, match="48 images.*has 6"):
        run_validate(base_cfg(demo_root, store, tmp_path, train_dir=str(other)))


# --- training -------------------------------------------------------------------------------------
def test_resume_continues_exactly(demo_root, store, tmp_path, monkeypatch):
    kw = dict(epochs=3, train_epochs=2, prune_ratio=0.5, adamw_lr=0.002, cos=True)
    straight = run_validate(base_cfg(demo_root, store, tmp_path / "a", **kw))
    real = train_mod.train_one_epoch
    calls = []

    def crash_in_second_epoch(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(train_mod, "train_one_epoch", crash_in_second_epoch)
    with pytest.raises(KeyboardInterrupt):
        run_validate(base_cfg(demo_root, store, tmp_path / "b", **kw))
    monkeypatch.setattr(train_mod, "train_one_epoch", real)
    with pytest.raises(ConfigError, match="other settings.*temperature"):
        run_validate(base_cfg(demo_root, store, tmp_path / "b", resume=True, temperature=3.0, **kw))
    resumed = run_validate(base_cfg(demo_root, store, tmp_path / "b", resume=True, **kw))
    assert resumed["top1"] == straight["top1"] and resumed["val_loss"] == pytest.approx(straight["val_loss"])
    a = safe_torch_load(tmp_path / "a" / "checkpoint.pth", what="checkpoint")["model"]
    b = safe_torch_load(tmp_path / "b" / "checkpoint.pth", what="checkpoint")["model"]
    for k in a:
        torch.testing.assert_close(a[k], b[k], msg=k)
    rows = [json.loads(line) for line in open(tmp_path / "b" / "metrics.jsonl")]
    assert [r["epoch"] for r in rows] == [1, 2]
    assert json.load(open(tmp_path / "b" / "final.json"))["label_batches_used"] <= 9


def test_resume_with_workers_and_dropout_continues_exactly(demo_root, store, tmp_path, interrupt_at_epoch):
    """MobileNet trains with dropout: a resumed run must continue the random stream (checkpointed
    RNG state, loaders that do not draw from it), with persistent DataLoader workers."""
    kw = dict(epochs=3, train_epochs=3, model="mobilenet_v3_small", workers=2, max_steps_per_epoch=2,
              val_interval=5, adamw_lr=0.01)
    run_validate(base_cfg(demo_root, store, tmp_path / "a", **kw))
    interrupt_at_epoch(train_mod, lambda: run_validate(base_cfg(demo_root, store, tmp_path / "b", **kw)))
    run_validate(base_cfg(demo_root, store, tmp_path / "b", resume=True, **kw))
    a = safe_torch_load(tmp_path / "a" / "checkpoint.pth", what="checkpoint")["model"]
    b = safe_torch_load(tmp_path / "b" / "checkpoint.pth", what="checkpoint")["model"]
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_authors_format_store_trains_like_ours(demo_root, tmp_path):
    """The relabel stage's two output formats (ours; the authors' epoch_*/batch_*.tar folder) feed
    the student the very same batches."""
    from lpld.models import build_model
    from lpld.relabel.generate import run_relabel
    from lpld.data import ImageFolder
    from lpld.validate.loader import BatchInputs, PlannedBatchSampler, SoftLabelBatches, build_train_loader
    from lpld.validate.pruning import PruningPlan
    torch.manual_seed(0)
    teacher = build_model("resnet18", 4).eval()
    paths = {}
    for fmt in ("ours", "authors"):
        paths[fmt] = run_relabel(dict(dataset="demo", train_dir=os.path.join(demo_root, "train"),
                                      output_dir=str(tmp_path / fmt), format=fmt, num_classes=4, batch_size=8,
                                      epochs=2, prune_ratio=0.5, input_size=16, mix_type="cutmix", workers=0,
                                      device="cpu", progress=False), teacher=teacher)
    mean, std = normalization("demo")
    batches = {}
    for fmt, path in paths.items():
        st = open_label_store(path)
        plan = PruningPlan(st.batches_per_epoch, 2, prune_ratio=0.5, seed=0)
        sampler = PlannedBatchSampler(plan)
        sampler.set_epoch(1)
        ds = SoftLabelBatches(ImageFolder(os.path.join(demo_root, "train")), path, 16, mean, std)
        batches[fmt] = list(build_train_loader(ds, sampler, workers=0, pin_memory=False))
    assert len(batches["ours"]) == len(batches["authors"]) == 6
    inputs = BatchInputs(torch.device("cpu"), mean, std)
    for a, b in zip(batches["ours"], batches["authors"]):
        assert int(a.batch_id) == int(b.batch_id)
        for x, y in zip(inputs(a), inputs(b)):  # images, soft logits, targets
            torch.testing.assert_close(x, y, rtol=0, atol=0)


@pytest.mark.parametrize("variant", [
    dict(granularity="epoch", prune_metric="order", prune_ratio=0.0, ema=True, gradient_accumulation_steps=2,
         sgd=True, cos=True, learning_rate=0.05, momentum=0.9, weight_decay=1e-4, dataset="tiny"),
    dict(granularity="batch", replacement=False, prune_ratio=0.5, label_smoothing=0.2, loss="kl",
         fetcher="getitems", model="mobilenet_v3_small"),
])
def test_other_training_modes_run(demo_root, store, tmp_path, variant):
    kw = dict(epochs=3, train_epochs=2, val_interval=5, checkpoint_interval=5, log_batches=True,
              max_steps_per_epoch=3) | variant
    if kw.get("dataset") == "tiny":  # the Tiny-ImageNet code paths (stem, warm-up, log-target loss) on demo images
        kw |= dict(num_classes=4)
    result = run_validate(base_cfg(demo_root, store, tmp_path, **kw))
    assert math.isfinite(result["val_loss"]) and result["epochs"] == 2
    rows = [json.loads(line) for line in open(tmp_path / "batches_rank0.jsonl")]
    assert len(rows) == 2 * 3
    if variant["granularity"] == "epoch":  # order, unpruned: stored epochs 0 and 1 in order
        assert [r["batch_id"] for r in rows] == [0, 1, 2, 6, 7, 8]
    metrics = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")]
    assert [m["epoch"] for m in metrics] == [1, 2] and "val_top1" in metrics[0] and "val_top1" in metrics[1]
    # the LR steps once per epoch in every granularity (the authors' batch mode steps it per batch)
    cfg = resolve(VALIDATE_SCHEMA, [("test", base_cfg(demo_root, store, tmp_path, **kw))])
    assert [m["lr"] for m in metrics] == pytest.approx(epoch_lrs(cfg, cfg.dataset, epochs=2), rel=1e-12)


def test_helper_store_roundtrip(demo_root, tmp_path, make_label_store):
    store = make_label_store(os.path.join(demo_root, "train"), str(tmp_path / "labels"), None,
                             num_classes=4, batch_size=8, epochs=2, mix_type="cutmix")
    assert store.num_batches == 2 * store.batches_per_epoch == 12
    rec = store.read(7)
    assert rec.batch_id == 7 and rec.logits.shape == (8, 4) and rec.mix_bbox is not None


def test_lpqld_configs_hold_their_reproduce_settings():
    """lpqld_in1k.yaml: scripts/reproduce/lpqld_in1k.sh 83-91 (step, T0 20, step 30, gamma 0.7,
    calibrated student temperature from 1.0, prune 0.9, MR-10); LPLD's defaults stay a fixed T."""
    from lpld.relabel import RELABEL_SCHEMA
    for name, k in (("lpqld_in1k.yaml", 10), ("lpqld_tiny.yaml", 20)):
        cfg = read(name)
        assert (cfg.temp_scheduler, cfg.temperature, cfg.temp_step_size, cfg.temp_step_gamma) == ("step", 20.0, 30, 0.7)
        assert (cfg.temp_stu_dynamic, cfg.prune_ratio, cfg.prune_mode) == (1.0, 0.9, "lpqld")
        relabel = parse_config(RELABEL_SCHEMA, ["--config", os.path.join(CONFIGS, name)],
                               sections=("common", "relabel"))
        assert (relabel.label_topk, relabel.prune_ratio) == (k, 0.9)
    lpld = read("imagenet1k.yaml")
    assert (lpld.temp_scheduler, lpld.temp_stu, lpld.temp_stu_dynamic, lpld.prune_mode) == ("none", 0.0, 0.0, "lpld")


def test_final_json_reports_label_bytes_for_full_labels(demo_root, store, tmp_path):
    """final.json of a full-label run: the store's real size, the full store's size (the same store
    here: prune 0, all classes, recorded), both ratios and the pool against an epoch."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        result = run_validate(base_cfg(demo_root, store, tmp_path / "f", model="timm/test_resnet",
                                       prune_ratio=0.9, max_steps_per_epoch=1, val_interval=1))
    finally:
        torch.set_num_threads(before)
    final = json.load(open(tmp_path / "f" / "final.json"))
    assert final["label_bytes_actual"] == store.nbytes() == final["label_bytes_store"]
    assert abs(final["label_bytes_full"] - store.nbytes()) <= 64  # this store is the full one
    assert final["compression_actual"] == pytest.approx(final["label_bytes_full"] / store.nbytes(), rel=1e-3)
    assert final["compression_nominal"] == pytest.approx(10.0) and final["label_topk"] is None
    assert (final["pool_batches"], final["batches_per_epoch"], final["small_pool"]) == (1, 6, True)
    assert final["label_bytes_used"] == 1 * 8 * 4 * 2 and result["temp_scheduler"] == "none"


def test_topk_store_converted_from_full_and_score_metrics_refuse_it(demo_root, store, tmp_path):
    """convert-labels --label-topk cuts a full store to its top k (the same views); a label-selection
    score needs full teacher distributions and refuses a top-k store in one line."""
    from lpld.labels import convert
    topk = open_label_store(convert(store.path, str(tmp_path / "k2"), label_topk=2, progress=False))
    full, cut = store.read(4), topk.read(4)
    assert torch.equal(cut.crops, full.crops) and cut.topk_indices.shape == (8, 2)
    assert torch.equal(cut.logits, full.logits.float().topk(2, dim=1).values.half())
    with pytest.raises(ConfigError, match=r"holds top-2 labels\. Use prune_metric random"):
        run_validate(base_cfg(demo_root, topk, tmp_path / "v", prune_metric="el2n", prune_ratio=0.5))
