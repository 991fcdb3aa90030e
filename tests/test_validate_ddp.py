"""Multi-process student training on CPU (gloo, 2 processes).

* weights trained by 2 ranks equal those of 1 process on the same global batches (gradient
  accumulation with no_sync, label smoothing, EMA), including a last batch with fewer rows than
  ranks (one rank trains on 0 rows);
* the evaluated model is the saved rank-0 model (BN buffers synced before evaluation and saving);
* the torchrun invocation of ``relabel_and_validate/validate.py`` with 2 gloo ranks;
* through a hard-label segment (HALD) too: both ranks build the same global hard batch (images,
  crops, CutMix) and each trains its rows, and the weights are the one process's.
"""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from collections import defaultdict

import pytest
import torch
from torch import nn

from lpld.engine import evaluate
from lpld.models import build_model
from lpld.utils.safe_load import safe_torch_load
from lpld.validate import run_validate
from lpld.validate import train as train_mod

pytestmark = pytest.mark.usefixtures("one_thread")

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class NormFreeNet(nn.Module):
    """A student without BatchNorm: 2 ranks then compute exactly what 1 process computes (BN
    normalises each rank's rows with their own batch statistics, as the authors' DataParallel)."""

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2), nn.ReLU(), nn.Conv2d(8, 16, 3, stride=2),
                                      nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.fc = nn.Linear(16, num_classes)

    def forward(self, x):
        return self.fc(self.features(x))


def norm_free_student(arch: str, num_classes: int, **_) -> nn.Module:
    return NormFreeNet(num_classes)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank_main(rank: int, world: int, runs: list) -> None:
    """One spawned rank: the environment torchrun would set, then each run in turn."""
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world), MASTER_ADDR="127.0.0.1")
    torch.set_num_threads(1)
    stock = train_mod.build_model
    for port, cfg, norm_free in runs:
        os.environ["MASTER_PORT"] = str(port)
        train_mod.build_model = norm_free_student if norm_free else stock
        run_validate(cfg)


def run_two_ranks(runs: list, world: int = 2) -> None:
    """``runs``: (cfg, norm_free) pairs, each trained by ``world`` (2) gloo ranks."""
    runs = [(_free_port(), cfg, norm_free) for cfg, norm_free in runs]
    torch.multiprocessing.start_processes(_rank_main, args=(world, runs), nprocs=world, start_method="spawn")


@pytest.fixture(scope="module")
def odd_folder(demo_root, tmp_path_factory):
    """17 distilled images: with batch size 8 the third batch of every epoch holds 1 row."""
    root = tmp_path_factory.mktemp("odd") / "train"
    for c, keep in zip(sorted(os.listdir(os.path.join(demo_root, "train"))), (5, 4, 4, 4)):
        src = os.path.join(demo_root, "train", c)
        (root / c).mkdir(parents=True)
        for name in sorted(os.listdir(src))[:keep]:
            shutil.copy(os.path.join(src, name), root / c / name)
    return str(root)


def base(demo_root, train_dir, store, out, **kw) -> dict:
    return dict(dataset="demo", train_dir=train_dir, label_dir=store.path, val_dir=os.path.join(demo_root, "val"),
                batch_size=8, workers=0, output_dir=str(out), progress=False, seed=0, device="cpu") | kw


def _state(out) -> dict:
    return safe_torch_load(os.path.join(out, "checkpoint.pth"), what="checkpoint")


@pytest.mark.slow
def test_two_ranks_train_the_weights_of_one_process(demo_root, odd_folder, tmp_path, monkeypatch, make_label_store):
    epochs = 24  # 5 forward/backward passes per epoch: the EMA averages (after 100 calls), not only copies
    store = make_label_store(odd_folder, str(tmp_path / "labels"), None, num_classes=4, batch_size=8,
                             epochs=epochs, mix_type="cutmix")
    assert [store.read(b).batch_size for b in range(3)] == [8, 8, 1]
    kw = dict(epochs=epochs, granularity="epoch", prune_metric="order", gradient_accumulation_steps=2,
              label_smoothing=0.2, loss="kl", temperature=4.0, ema=True, sgd=True, cos=True, learning_rate=0.05,
              momentum=0.9, weight_decay=1e-4, val_interval=epochs, checkpoint_interval=epochs)
    # a BatchNorm student (on 48 images: a 1-row batch cannot be batch-normalised at 16 px)
    full = os.path.join(demo_root, "train")
    bn_store = make_label_store(full, str(tmp_path / "bn_labels"), None, num_classes=4, batch_size=8, epochs=2)
    bn_kw = dict(epochs=2, granularity="epoch", prune_metric="order", val_interval=1)
    run_two_ranks([(base(demo_root, odd_folder, store, tmp_path / "ddp", **kw), True),
                   (base(demo_root, full, bn_store, tmp_path / "ddp_bn", model="resnet18", **bn_kw), False)])
    monkeypatch.setattr(train_mod, "build_model", norm_free_student)
    single = run_validate(base(demo_root, odd_folder, store, tmp_path / "one", **kw))

    two, one = _state(tmp_path / "ddp"), _state(tmp_path / "one")
    for part in ("model", "ema"):
        a, b = (two[part], one[part]) if part == "model" else (two[part]["model"], one[part]["model"])
        for k in b:
            torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-6, msg=f"{part}.{k}")
    assert two["ema"]["step"] == one["ema"]["step"] == epochs * 5
    # the logged training metrics are those of the single process (losses all-reduced, not rank 0's)
    rows = [json.loads(line) for line in open(tmp_path / "ddp" / "metrics.jsonl")]
    ones = [json.loads(line) for line in open(tmp_path / "one" / "metrics.jsonl")]
    assert len(rows) == len(ones) > 0 and all(r["train_images"] == 17 for r in rows)
    for r, o in zip(rows, ones):
        assert r["train_loss"] == pytest.approx(o["train_loss"], rel=1e-5)
        assert r["train_top1"] == pytest.approx(o["train_top1"]) and r["train_top5"] == pytest.approx(o["train_top5"])
    final = json.load(open(tmp_path / "ddp" / "final.json"))
    assert final["world_size"] == 2 and final["val_loss"] == pytest.approx(single["val_loss"], rel=1e-5)

    # BatchNorm student: the all-reduced evaluation is the evaluation of the saved rank-0 model
    check_reported_equals_saved(demo_root, tmp_path / "ddp_bn", "model")


@pytest.mark.slow
@pytest.mark.parametrize("world", [2, 3])
def test_two_ranks_train_a_hard_segment_like_one_process(demo_root, odd_folder, tmp_path, monkeypatch,
                                                         make_label_store, world):
    """soft 1 -> hard 2 -> soft 1 on 17 images, hard batches of 7: 7 -> 6 rows (the odd row dropped),
    6, and 3 -> 2. Every rank must build the same global batch, its crops and its CutMix, train its
    slice of the rows, and scale its loss so the summed gradient is the one process's: then the
    weights (and the EMA) equal those of one process. With 2 ranks every hard batch splits evenly;
    3 ranks split the last one 1 / 1 / 0, which pins the scaling (world size / the batch's rows,
    not a per-rank mean) and a rank without rows."""
    store = make_label_store(odd_folder, str(tmp_path / "labels"), None, num_classes=4, batch_size=8, epochs=2)
    kw = dict(epochs=2, train_epochs=4, label_plan="soft:1,hard:2,soft:1", hard_batch_size=7, loss="kl",
              temperature=4.0, ema=True, sgd=True, cos=True, learning_rate=0.05, momentum=0.9, weight_decay=1e-4,
              val_interval=4, checkpoint_interval=4)
    run_two_ranks([(base(demo_root, odd_folder, store, tmp_path / "ddp", **kw), True)], world=world)
    monkeypatch.setattr(train_mod, "build_model", norm_free_student)
    run_validate(base(demo_root, odd_folder, store, tmp_path / "one", **kw))
    two, one = _state(tmp_path / "ddp"), _state(tmp_path / "one")
    for part in ("model", "ema"):
        a, b = (two[part], one[part]) if part == "model" else (two[part]["model"], one[part]["model"])
        for k in b:
            torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-6, msg=f"{part}.{k}")
    rows = [json.loads(line) for line in open(tmp_path / "ddp" / "metrics.jsonl")]
    ones = [json.loads(line) for line in open(tmp_path / "one" / "metrics.jsonl")]
    assert [r["kind"] for r in rows] == ["soft", "hard", "hard", "soft"]
    assert [r["train_images"] for r in rows[1:3]] == [14, 14] and [r["steps"] for r in rows[1:3]] == [3, 3]
    for r, o in zip(rows, ones):
        assert r["train_images"] == o["train_images"]  # soft: 3 of the 6 stored batches (8, 8, 1 rows each)
        assert r["train_loss"] == pytest.approx(o["train_loss"], rel=1e-5)
        assert r["train_top1"] == pytest.approx(o["train_top1"])


def check_reported_equals_saved(demo_root, out, part: str) -> None:
    final = json.load(open(os.path.join(out, "final.json")))
    state = _state(out)
    weights = state["model"] if part == "model" else state["ema"]["model"]
    model = build_model(final["model"], 4)  # the student the run trained
    model.load_state_dict(weights)
    from lpld.data import build_val_dataset, student_val_transform
    val = build_val_dataset("demo", os.path.join(demo_root, "val"), student_val_transform("demo", 16))
    saved = evaluate(model, torch.utils.data.DataLoader(val, batch_size=64), torch.device("cpu"), progress=False)
    assert final["top1"] == pytest.approx(saved["top1"]) and final["val_loss"] == pytest.approx(saved["loss"], rel=1e-5)


@pytest.mark.slow
def test_torchrun_gloo_two_ranks_train_on_disjoint_data(demo_root, tmp_path, make_label_store):
    """The command the reproduce scripts run on a multi-GPU machine, with 2 CPU processes."""
    store = make_label_store(os.path.join(demo_root, "train"), str(tmp_path / "labels"), None,
                             num_classes=4, batch_size=8, epochs=2, mix_type="cutmix")
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           os.path.join(REPO, "relabel_and_validate", "validate.py"),
           "--config", os.path.join(REPO, "relabel_and_validate", "configs", "demo.yaml"),
           "--train-dir", os.path.join(demo_root, "train"), "--label-dir", store.path,
           "--val-dir", os.path.join(demo_root, "val"), "--batch-size", "8", "--epochs", "2",
           "--output-dir", str(out), "--workers", "1", "--val-interval", "1", "--checkpoint-interval", "1",
           "--ema", "--no-progress", "--log-batches", "--device", "cpu"]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=REPO)
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=240, cwd=str(tmp_path))
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "world size 2" in done.stdout

    steps = defaultdict(dict)
    for rank in (0, 1):
        for line in open(out / f"batches_rank{rank}.jsonl"):
            r = json.loads(line)
            steps[(r["epoch"], r["step"])][rank] = r
    assert len(steps) == 2 * store.batches_per_epoch
    for key, by_rank in steps.items():
        a, b = by_rank[0], by_rank[1]
        assert a["batch_id"] == b["batch_id"], key  # both ranks work on the same stored batch ...
        assert set(a["image_indices"]).isdisjoint(b["image_indices"]), key  # ... on disjoint images
        stored = store.read(a["batch_id"]).image_indices.tolist()
        assert a["image_indices"] + b["image_indices"] == stored, key  # which together are the batch
    metrics = [json.loads(line) for line in open(out / "metrics.jsonl")]
    assert [m["epoch"] for m in metrics] == [1, 2] and all(m["train_images"] == 48 for m in metrics)
    # the reported accuracy is that of the saved EMA model (its BN buffers are rank 0's)
    check_reported_equals_saved(demo_root, out, "ema")
