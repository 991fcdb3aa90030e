"""Label-selection metrics: scores equal a plain-Python reference of each paper's formula on a tiny
store; a metric-chosen pool is exactly the top / bottom fraction; random and order are unchanged."""
from __future__ import annotations

import json
import math
import os

import numpy as np
import pytest
import torch

from lpld.augment import BatchRecord
from lpld.config import ConfigError
from lpld.validate import run_validate
from lpld.validate.pruning import PruningPlan, select_pool
from lpld.validate.selection import (batch_stats, metric_scores, snapshot_stats, teacher_stats,
                                     unit_scores, view_targets)

pytestmark = pytest.mark.usefixtures("one_thread")


# --- plain-Python references of the papers' per-example scores ------------------------------------------
def _softmax(z):
    m = max(z)
    e = [math.exp(v - m) for v in z]
    return [v / sum(e) for v in e]


def _reference_view_label(record, labels, classes, size):
    """Mixed one-hot target and dominant class of every view, written out."""
    out = []
    for i in range(record.batch_size):
        own = int(labels[int(record.image_indices[i])])
        y = [0.0] * classes
        if record.mix_index is None:
            y[own] = 1.0
        else:
            partner = int(labels[int(record.image_indices[int(record.mix_index[i])])])
            if record.mix_bbox is not None:
                x1, y1, x2, y2 = record.mix_bbox
                share = (x2 - x1) * (y2 - y1) / (size * size)
            else:
                share = 1 - record.mix_lam
            y[own] += 1 - share
            y[partner] += share
        dominant = max(range(classes), key=lambda c: (y[c], -c))
        out.append((y, dominant))
    return out


def _reference_scores(trajectories, views, topk):
    """trajectories[b][t][i]: logits of view i of batch b at snapshot t; views[b][i] = (y, dominant).
    EL2N (Paul et al.): ||p - y||_2; AUM (Pleiss et al.): z_y - max_{j != y} z_j averaged over time;
    entropy: -sum p log p; forgetting (Toneva et al.): correct -> wrong transitions, never learned = T;
    LBPE (YOCO): ||p - y||_2 summed over the top-k snapshots by number of correct views."""
    T = len(trajectories[0])
    correct_per_t = [0] * T
    for traj, vs in zip(trajectories, views):
        for t in range(T):
            correct_per_t[t] += sum(max(range(len(z)), key=lambda c: (z[c], -c)) == d for z, (_, d) in zip(traj[t], vs))
    top = sorted(sorted(range(T), key=lambda t: (-correct_per_t[t], t))[:topk])
    out = {m: [] for m in ("el2n", "aum", "entropy", "forgetting", "yoco")}
    for traj, vs in zip(trajectories, views):
        per = {m: [] for m in out}
        for i, (y, d) in enumerate(vs):
            zs = [traj[t][i] for t in range(T)]
            ps = [_softmax(z) for z in zs]
            l2 = [math.sqrt(sum((p[c] - y[c]) ** 2 for c in range(len(y)))) for p in ps]
            per["el2n"].append(sum(l2) / T)
            per["aum"].append(sum(z[d] - max(z[c] for c in range(len(z)) if c != d) for z in zs) / T)
            per["entropy"].append(sum(-sum(p_c * math.log(p_c) for p_c in p) for p in ps) / T)
            correct = [max(range(len(z)), key=lambda c: (z[c], -c)) == d for z in zs]
            events = sum(1 for t in range(1, T) if correct[t - 1] and not correct[t])
            per["forgetting"].append(events if any(correct) else T)
            per["yoco"].append(sum(l2[t] for t in top))
        for m in out:
            out[m].append(sum(per[m]) / len(per[m]))
    return out


def test_hand_computed_values():
    # two views, classes 0 and 2, teacher logits [2, 0, 0] and [0, 1, 0]
    record = BatchRecord(batch_id=0, image_indices=torch.tensor([0, 1]), crops=torch.zeros(2, 4),
                         logits=torch.tensor([[2.0, 0.0, 0.0], [0.0, 1.0, 0.0]]))
    targets, dominant = view_targets(record, torch.tensor([0, 2]), 3, None)
    stats = batch_stats(record.logits.unsqueeze(0), targets, dominant)
    p0 = [math.e ** 2 / (math.e ** 2 + 2), 1 / (math.e ** 2 + 2)]    # 0.78699, 0.10651
    p1 = [1 / (math.e + 2), math.e / (math.e + 2)]                    # 0.21194, 0.57612
    # y = [1, 0, 0] and [0, 0, 1]: view 1's probability on its class 2 is p1[0]
    el2n = (math.sqrt((1 - p0[0]) ** 2 + 2 * p0[1] ** 2) + math.sqrt(p1[0] ** 2 + p1[1] ** 2 + (1 - p1[0]) ** 2)) / 2
    assert metric_scores([stats], "el2n")[0] == pytest.approx(el2n) == pytest.approx(0.62991, abs=1e-5)
    assert metric_scores([stats], "aum")[0] == pytest.approx((2.0 + (0.0 - 1.0)) / 2)
    ent = (-(p0[0] * math.log(p0[0]) + 2 * p0[1] * math.log(p0[1]))
           - (2 * p1[0] * math.log(p1[0]) + p1[1] * math.log(p1[1])))
    assert metric_scores([stats], "entropy")[0] == pytest.approx(ent / 2)
    # view 0 is right, view 1 (class 2, predicted 1) never is: forgetting 0 and T = 1
    assert metric_scores([stats], "forgetting")[0] == pytest.approx(0.5)


@pytest.fixture(scope="module")
def tiny_store(demo_root, tmp_path_factory, make_label_store):
    """3 epochs x 6 batches of 8 CutMix-ed views of the 48 demo images, random logits."""
    return make_label_store(os.path.join(demo_root, "train"), str(tmp_path_factory.mktemp("sel") / "labels"),
                            None, num_classes=4, batch_size=8, epochs=3, mix_type="cutmix")


def _labels(demo_root):
    from lpld.data import ImageFolder
    return torch.tensor(ImageFolder(os.path.join(demo_root, "train")).targets)


def test_teacher_scores_equal_the_reference_on_a_tiny_store(demo_root, tiny_store):
    labels = _labels(demo_root)
    ids = range(tiny_store.num_batches)
    stats = teacher_stats(tiny_store, ids, labels, 4, 16)
    records = [tiny_store.read(b) for b in ids]
    assert any(r.mix_bbox[2] > r.mix_bbox[0] for r in records)  # some views really are mixed
    views = [_reference_view_label(r, labels, 4, 16) for r in records]
    trajectories = [[r.logits.float().tolist()] for r in records]
    ref = _reference_scores(trajectories, views, topk=1)
    for metric in ("el2n", "aum", "entropy"):
        np.testing.assert_allclose(metric_scores(stats, metric), ref[metric], rtol=1e-6, atol=1e-9)


def test_trajectory_scores_equal_the_reference(demo_root, tiny_store):
    labels = _labels(demo_root)
    ids = list(range(6))
    gen = torch.Generator().manual_seed(3)
    outputs = {(t, b): torch.randn(8, 4, generator=gen) * 2 for t in range(4) for b in ids}

    class Snapshot(torch.nn.Module):  # returns fixed logits per (snapshot, batch)
        def __init__(self, t):
            super().__init__()
            self.t = t

        def forward(self, x):
            return outputs[(self.t, int(x[0, 0, 0, 0]))]

    images = lambda b: torch.full((8, 3, 2, 2), float(b))  # noqa: E731 - carries the batch id
    stats = snapshot_stats(tiny_store, ids, labels, 4, 16, [Snapshot(t) for t in range(4)], images,
                           torch.device("cpu"))
    views = [_reference_view_label(tiny_store.read(b), labels, 4, 16) for b in ids]
    trajectories = [[outputs[(t, b)].tolist() for t in range(4)] for b in ids]
    ref = _reference_scores(trajectories, views, topk=2)
    for metric in ("el2n", "aum", "entropy", "forgetting"):
        np.testing.assert_allclose(metric_scores(stats, metric), ref[metric], rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(metric_scores(stats, "yoco", yoco_topk=2), ref["yoco"], rtol=1e-6, atol=1e-9)


def test_forgetting_counts_transitions_and_never_learned_views():
    # one view per pattern, class 0; correct when logit 0 wins
    right, wrong = [1.0, 0.0], [0.0, 1.0]
    patterns = {(1, 0, 1, 0): 2, (0, 0, 0, 0): 4, (1, 1, 1, 1): 0, (0, 1, 1, 0): 1, (0, 1, 1, 1): 0}
    traj = torch.tensor([[right if p[t] else wrong for p in patterns] for t in range(4)])
    targets = torch.tensor([[1.0, 0.0]] * len(patterns))
    for k, expected in enumerate(patterns.values()):
        s = batch_stats(traj[:, k:k + 1], targets[k:k + 1], torch.tensor([0]))
        assert s.forgetting == expected


def test_epoch_units_are_view_weighted_means():
    values, views = np.array([1.0, 3.0, 2.0, 2.0]), np.array([8.0, 4.0, 8.0, 8.0])
    np.testing.assert_allclose(unit_scores(values, views, 2, "epoch"), [(8 + 12) / 12, 2.0])
    np.testing.assert_allclose(unit_scores(values, views, 2, "batch"), values)


# --- pools ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("keep", ["high", "low"])
def test_metric_pool_is_exactly_the_top_or_bottom_fraction(keep):
    bpe, epochs, ratio = 4, 5, 0.5
    scores = np.random.default_rng(0).permutation(20).astype(float).tolist()
    plan = PruningPlan(bpe, epochs, ratio, metric="el2n", scores=scores, keep=keep, seed=1)
    candidates = [b for b in range(20) if (b + 1) % bpe]  # the remapped last batch of each epoch is out
    ranked = sorted(candidates, key=lambda b: -scores[b] if keep == "high" else scores[b])
    assert plan.pool_ids == sorted(ranked[:10])
    assert plan.used_batch_ids() == set(plan.pool_ids)
    drawn = [b for e in range(epochs) for b in plan.epoch_batches(e)]
    assert set(drawn) <= set(plan.pool_ids) and len(drawn) == epochs * bpe
    # without the remapping every batch is a candidate
    free = PruningPlan(bpe, epochs, ratio, metric="el2n", scores=scores, keep=keep, granularity="batch")
    everything = sorted(range(20), key=lambda b: -scores[b] if keep == "high" else scores[b])
    assert free.pool_ids == sorted(everything[:10])


def test_metric_pool_of_stored_epochs_and_ties():
    plan = PruningPlan(3, 6, 0.5, metric="aum", granularity="epoch", scores=[5, 1, 5, 0, 5, 2], keep="high")
    assert plan.pool_ids == [0, 2, 4]  # three-way tie at 5 ... all kept
    plan = PruningPlan(3, 6, 0.5, metric="aum", granularity="epoch", scores=[1, 1, 1, 1, 0, 0], keep="high")
    assert plan.pool_ids == [0, 1, 2]  # ties go to the lower id
    assert plan.epoch_batches(0) in ([0, 1, 2], [3, 4, 5], [6, 7, 8])
    assert plan.used_batch_ids() == set(range(9))
    assert select_pool([3.0, 1.0, 2.0], 2, "low") == [1, 2]
    with pytest.raises(ValueError, match="NaN"):
        select_pool([1.0, float("nan")], 1)
    with pytest.raises(ValueError, match="one score per stored batch"):
        PruningPlan(3, 6, 0.5, metric="el2n", scores=[1.0] * 5)
    with pytest.raises(ValueError, match="takes no scores"):
        PruningPlan(3, 6, 0.5, metric="random", scores=[1.0] * 18)


PINNED = {  # epoch_batches of 8 epochs before score metrics existed
    "random": (dict(batches_per_epoch=5, train_epochs=8, prune_ratio=0.75, seed=3),
               [[8, 0, 1, 2, 1], [8, 2, 5, 3, 7], [8, 0, 5, 7, 2], [3, 1, 2, 3, 6], [0, 8, 5, 3, 2],
                [0, 1, 0, 8, 8], [3, 3, 8, 8, 1], [5, 6, 8, 6, 2]]),
    "no_replacement": (dict(batches_per_epoch=5, train_epochs=8, prune_ratio=0.75, seed=3, replacement=False),
                       [[5, 0, 3, 6, 3], [1, 8, 8, 7, 2], [8, 7, 6, 3, 5], [8, 3, 0, 2, 1], [7, 1, 8, 6, 3],
                        [0, 8, 5, 2, 3], [1, 2, 8, 8, 3], [6, 7, 0, 3, 5]]),
    "order": (dict(batches_per_epoch=5, train_epochs=8, prune_ratio=0.5, metric="order"),
              [[0, 1, 2, 3, 3], [5, 6, 7, 8, 8], [10, 11, 12, 13, 13], [15, 16, 17, 18, 18]] * 2),
    "epoch": (dict(batches_per_epoch=5, train_epochs=8, prune_ratio=0.75, granularity="epoch", seed=1),
              [list(range(0, 5)), list(range(5, 10)), list(range(5, 10)), list(range(0, 5))]
              + [list(range(5, 10))] * 4),
    "batch": (dict(batches_per_epoch=5, train_epochs=8, prune_ratio=0.75, granularity="batch", seed=2),
              [[8, 2, 1, 2, 4], [2, 8, 3, 8, 1], [5, 8, 2, 8, 6], [9, 3, 2, 5, 6], [8, 5, 4, 6, 0],
               [7, 8, 0, 6, 5], [2, 8, 6, 3, 7], [6, 1, 8, 7, 3]]),
}


@pytest.mark.parametrize("name", sorted(PINNED))
def test_random_and_order_are_unchanged(name):
    kwargs, expected = PINNED[name]
    plan = PruningPlan(**kwargs)
    assert [plan.epoch_batches(e) for e in range(8)] == expected
    assert plan.required_batches == plan.pool_batches


# --- in the validate stage -------------------------------------------------------------------------------
def _cfg(demo_root, store, out, **kw):
    return dict(dataset="demo", train_dir=os.path.join(demo_root, "train"), label_dir=store.path,
                val_dir=os.path.join(demo_root, "val"), batch_size=8, epochs=3, workers=0, output_dir=str(out),
                temperature=4.0, val_interval=5, progress=False, seed=0, log_batches=True) | kw


def test_validate_trains_on_the_metric_chosen_pool(demo_root, tiny_store, tmp_path):
    result = run_validate(_cfg(demo_root, tiny_store, tmp_path, prune_ratio=0.5, prune_metric="el2n",
                               prune_keep="low", train_epochs=2))
    with open(tmp_path / "label_selection.json") as f:
        record = json.load(f)
    stats = teacher_stats(tiny_store, range(12), _labels(demo_root), 4, 16)
    expected = metric_scores(stats, "el2n")
    np.testing.assert_allclose(record["unit_scores"], expected)
    candidates = [b for b in range(12) if (b + 1) % 6]
    pool = sorted(sorted(candidates, key=lambda b: (expected[b], b))[:6])
    assert record["pool"] == pool
    with open(tmp_path / "batches_rank0.jsonl") as f:
        seen = {json.loads(line)["batch_id"] for line in f}
    assert seen <= set(pool) and result["label_batches_used"] == 6


def test_trajectory_metrics_need_the_proxy_and_a_full_store(demo_root, tiny_store, tmp_path, make_label_store):
    with pytest.raises(ConfigError, match="selection-source proxy"):
        run_validate(_cfg(demo_root, tiny_store, tmp_path, prune_metric="forgetting", selection_source="teacher",
                          prune_ratio=0.5))
    pruned = make_label_store(os.path.join(demo_root, "train"), str(tmp_path / "p50"), None, num_classes=4,
                              batch_size=8, epochs=3, prune_ratio=0.5)
    with pytest.raises(ConfigError, match="ranks all 18 stored batches.*holds 9"):
        run_validate(_cfg(demo_root, pruned, tmp_path, prune_metric="el2n", prune_ratio=0.5))


def test_proxy_scores_are_recorded_and_reused(demo_root, tiny_store, tmp_path, monkeypatch):
    from lpld.validate import selection, train as train_mod
    from lpld.validate.schema import VALIDATE_SCHEMA
    from lpld.config import resolve
    cfg = resolve(VALIDATE_SCHEMA, [("test", _cfg(demo_root, tiny_store, tmp_path, prune_metric="forgetting",
                                                  prune_ratio=0.5, proxy_epochs=2, train_epochs=3))])
    plan = train_mod.make_plan(cfg, tiny_store)
    assert plan.metric == "forgetting" and len(plan.pool_ids) == 9
    with open(tmp_path / "label_selection.json") as f:
        record = json.load(f)
    assert record["settings"]["selection_source"] == "proxy" and record["pool"] == plan.pool_ids
    scores = np.array(record["unit_scores"])
    assert ((scores >= 0) & (scores <= 2)).all()  # forgetting counts with 2 snapshots lie in 0..2
    # the same settings reuse the record instead of training the proxy again
    monkeypatch.setattr(selection, "_compute_stats", lambda *a, **k: pytest.fail("recomputed"))
    assert train_mod.make_plan(cfg, tiny_store).pool_ids == plan.pool_ids
