"""Multi-process training through torchrun: gloo backend, 2 CPU processes, the real CLI."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import defaultdict

import pytest

sys.path.insert(0, os.path.dirname(__file__))
from test_validate_helpers import make_label_store, one_thread  # noqa: E402,F401

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_torchrun_gloo_two_ranks_train_on_disjoint_data(demo_root, tmp_path):
    store = make_label_store(os.path.join(demo_root, "train"), str(tmp_path / "labels"), None,
                             num_classes=4, batch_size=8, epochs=2, mix_type="cutmix")
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           os.path.join(REPO, "relabel_and_validate", "validate.py"),
           "--config", os.path.join(REPO, "relabel_and_validate", "configs", "demo.yaml"),
           "--train-dir", os.path.join(demo_root, "train"), "--label-dir", store.path,
           "--val-dir", os.path.join(demo_root, "val"), "--batch-size", "8", "--epochs", "2",
           "--output-dir", str(out), "--workers", "1", "--val-interval", "1", "--no-progress",
           "--log-batches", "--device", "cpu"]
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
    final = json.load(open(out / "final.json"))
    assert final["world_size"] == 2 and 0.0 <= final["top1"] <= 100.0
    metrics = [json.loads(line) for line in open(out / "metrics.jsonl")]
    assert [m["epoch"] for m in metrics] == [1, 2] and all(m["train_images"] == 48 for m in metrics)
    assert all(m["train_loss"] == pytest.approx(m["train_loss"]) for m in metrics)  # finite
