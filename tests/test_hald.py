"""Hard-label epochs beside pruned soft labels (HALD: Cui et al., ICML 2026; github Jiacheng8/HALD at
ffbca04, ``validate/train_fkd.py``), and the hard-label-only student.

Reference style: ``reference_segments`` / ``reference_soft_batches`` are the straightforward
transcriptions of their ``get_args`` / ``generate_epoch_plan`` and of their training loop's pool draw
(``train_fkd.py:142-211, 458-477``); our plan and pool must equal them everywhere, and their
published vectors. The hard-epoch CutMix must equal ``timm.data.Mixup`` (their
``train_fkd.py:449-454``) on the same draws.
"""
from __future__ import annotations

import itertools
import math

import pytest
import torch
import torch.nn.functional as F

from lpld.validate.label_plan import SETTINGS, SoftPool, epoch_kinds, label_plan_rule, segments

pytestmark = pytest.mark.usefixtures("one_thread")


# --- their code, transcribed ------------------------------------------------------------------------
def reference_segments(setting, total_soft, total_hard, n):
    """train_fkd.py get_args() / generate_epoch_plan(): [(kind, epochs), ...] in training order."""
    S, H = int(total_soft), int(total_hard)
    total = S + H
    if setting == "S1":
        return [("hard", H), ("soft", S)]
    if setting == "S6":
        return [("soft", S // 2), ("hard", H), ("soft", S - S // 2)]
    if setting == "S7":
        return [("hard", H // 2), ("soft", S), ("hard", H - H // 2)]
    if setting == "S8":
        return [("soft", S), ("hard", H)]
    size, first = {"S2": (n, "hard"), "S3": (2 * n, "hard"), "S4": (n, "soft"), "S5": (2 * n, "soft")}[setting]
    lengths = [size] * (total // size) + ([total % size] if total % size else [])
    out, kind = [], first
    for length in lengths:
        out.append((kind, length))
        kind = "soft" if kind == "hard" else "hard"
    return out


def reference_plan(setting, total_soft, total_hard, n):
    return [k for k, L in reference_segments(setting, total_soft, total_hard, n) for _ in range(L)]


def reference_soft_batches(segs, n, batches_per_epoch, fkd_seed=42):
    """train_fkd.py:458-477: per epoch the stored-batch ids (soft) or None (hard)."""
    out, times = [], 0
    for kind, length in segs:
        pool = []  # emptied at every segment start
        for _ in range(int(length)):
            if not pool:  # refilled before every epoch, hard ones too
                g = torch.Generator()
                g.manual_seed(fkd_seed + times)
                pool = torch.randperm(n * batches_per_epoch, generator=g).tolist()
                times += 1
            take, pool = pool[:batches_per_epoch], pool[batches_per_epoch:]
            out.append(take if kind == "soft" else None)
    return out


# --- the plan ---------------------------------------------------------------------------------------
def test_every_setting_expands_to_their_segments():
    """All S, H in 0..22, n in 1..7 and S1..S8: the segment lists of their code, exactly."""
    for setting, s, h, n in itertools.product(SETTINGS, range(23), range(23), range(1, 8)):
        if s + h == 0:
            continue
        ours = segments(setting, s + h, s, h, block=n)
        assert ours == reference_segments(setting, s, h, n), (setting, s, h, n)
        assert epoch_kinds(ours) == reference_plan(setting, s, h, n)


@pytest.mark.parametrize("args, kinds", [
    (("S6", 5, 4, 2), "SSHHHHSSS"), (("S2", 3, 4, 2), "HHSSHHS"), (("S3", 3, 4, 2), "HHHHSSS"),
    (("S5", 3, 4, 2), "SSSSHHH"), (("S7", 3, 5, 2), "HHSSSHHH"), (("S4", 0, 5, 3), "SSSHH")])
def test_published_plan_vectors(args, kinds):
    setting, s, h, n = args
    assert "".join(k[0].upper() for k in epoch_kinds(segments(setting, s + h, s, h, block=n))) == kinds


def test_their_imagenet_recipe_and_the_block_settings_at_300_epochs():
    assert segments("S6", 300, 150, 150) == [("soft", 75), ("hard", 150), ("soft", 75)]  # train.sh, S6
    assert segments("S6", 301, 151, 150) == [("soft", 75), ("hard", 150), ("soft", 76)]  # the extra soft epoch last
    s3 = epoch_kinds(segments("S3", 300, 150, 150, block=10))
    assert (s3.count("hard"), s3.count("soft")) == (160, 140)  # 15 blocks of 20, hard first
    for setting, hard in (("S2", 153), ("S4", 147), ("S3", 154), ("S5", 146)):  # n = 7: 43 blocks, the last of 6
        assert epoch_kinds(segments(setting, 300, 150, 150, block=7)).count("hard") == hard, setting
    # defaults: their script's 150 of 300 soft, the rest hard (train.sh:25-26); one given: the other is the rest
    assert segments("S6", 300) == segments("S6", 300, 150, 150) == segments("S6", 300, hard_epochs=150)
    assert segments("S8", 10, soft_epochs=3) == [("soft", 3), ("hard", 7)]


def test_explicit_lists_hard_and_soft():
    assert segments("soft:75,hard:150,soft:75", 300) == [("soft", 75), ("hard", 150), ("soft", 75)]
    assert segments("hard", 7) == [("hard", 7)] and segments("soft", 7) == [("soft", 7)]
    for bad, fragment in (("soft:150,hard:100", "holds 250 epochs, but the run trains 300"),):
        with pytest.raises(ValueError, match=fragment):
            segments(bad, 300)
    with pytest.raises(ValueError, match="do not add up to the 300 epochs"):
        segments("S6", 300, 150, 100)
    with pytest.raises(ValueError, match="alternates blocks of plan_block"):
        segments("S2", 300)
    assert label_plan_rule("S9", {}) and label_plan_rule("soft:1,hrd:2", {}) and label_plan_rule("soft:x", {})
    assert not any(label_plan_rule(v, {}) for v in ("soft", "hard", "S1", "S8", "hard:3,soft:0"))


# --- the soft pool ------------------------------------------------------------------------------------
def _pool_epochs(pool: SoftPool) -> list:
    return [pool.epoch_batches(e) if k == "soft" else None for e, k in enumerate(epoch_kinds(pool.segments))]


def test_soft_pool_draws_their_batches():
    segs = segments("S6", 9, 5, 4)
    pool = SoftPool(segs, block=2, batches_per_epoch=3, seed=0)
    expected = [[0, 3, 2], [4, 1, 5], None, None, None, None, [5, 2, 0], [1, 4, 3], [3, 2, 1]]  # spec vector
    assert reference_soft_batches(segs, 2, 3) == expected
    assert _pool_epochs(pool) == expected
    # every setting, several n and epoch sizes, zero-length segments included
    for setting, s, h, n, bpe in itertools.product(SETTINGS, (0, 3, 7), (0, 4, 9), (1, 2, 3), (1, 4)):
        if s + h == 0:
            continue
        segs = segments(setting, s + h, s, h, block=n)
        assert _pool_epochs(SoftPool(segs, block=n, batches_per_epoch=bpe)) == reference_soft_batches(segs, n, bpe), \
            (setting, s, h, n, bpe)


def test_soft_pool_at_their_imagenet_scale():
    """IN-1K IPC 10, SLC 100: n = 10 stored epochs of 625 batches, S6 150/150 over 300 epochs."""
    segs = segments("S6", 300, 150, 150)
    pool = SoftPool(segs, block=10, batches_per_epoch=625)
    assert pool.epoch_batches(0)[:5] == [42, 4785, 198, 6012, 3406]  # their first epoch (fkd_seed 42)
    ref = reference_soft_batches(segs, 10, 625)
    for epoch in (0, 7, 74, 225, 233, 299):
        assert pool.epoch_batches(epoch) == ref[epoch], epoch
    assert pool.slot(225) == ("soft", 65 - 42, 0)  # the first of segment 3: seed 65, offset 0
    assert pool.used_batch_ids() == set(range(6250))
    with pytest.raises(ValueError, match="hard epoch"):
        pool.epoch_batches(100)


def test_other_seeds_draw_other_permutations():
    segs = segments("S8", 6, 3, 3)
    a, b = SoftPool(segs, 2, 4, seed=0), SoftPool(segs, 2, 4, seed=1)
    assert [a.generator_seed(k) for k in range(3)] == [42, 43, 44]
    assert not {a.generator_seed(k) for k in range(100)} & {b.generator_seed(k) for k in range(100)}
    assert _pool_epochs(a) != _pool_epochs(b)
    assert sorted(a.epoch_batches(0) + a.epoch_batches(1)) == list(range(8))  # without replacement within one
    assert a.slot(3) == ("hard", math.ceil(3 / 2), 0)  # a new segment: the next permutation, from its start


# --- hard epochs: CutMix and label smoothing are timm's Mixup ---------------------------------------------
@pytest.mark.parametrize("size, batch, smoothing", [(16, 8, 0.8), (15, 6, 0.1), (224, 16, 0.8), (7, 2, 0.0)])
def test_hard_cutmix_equals_timm_mixup_on_the_same_draws(size, batch, smoothing):
    """Their ``timm.data.Mixup(mixup_alpha=0.0, cutmix_alpha=1.0, label_smoothing, num_classes)``
    (train_fkd.py:449-454) draws from the global np.random; ours from a RandomState seeded by
    (seed, epoch, batch). Seeded alike, the mixed images and the targets are identical."""
    import numpy as np
    from timm.data import Mixup
    from lpld.validate.hard import hard_cutmix, mix_generator, mix_seed
    theirs = Mixup(mixup_alpha=0.0, cutmix_alpha=1.0, label_smoothing=smoothing, num_classes=10)
    boxes = 0
    for seed, epoch, b in itertools.product((0, 3), (0, 1, 7), range(4)):
        g = torch.Generator().manual_seed(b)
        x, y = torch.randn(batch, 3, size, size, generator=g), torch.randint(0, 10, (batch,), generator=g)
        np.random.seed(mix_seed(seed, epoch, b))
        tx, ty = theirs(x.clone(), y.clone())
        ox, oy = hard_cutmix(x, y, 10, mix_generator(seed, epoch, b), smoothing=smoothing)
        assert torch.equal(ox, tx) and torch.equal(oy, ty), (seed, epoch, b)
        boxes += int(not torch.equal(ox, x))
    assert boxes > 20  # CutMix did paste boxes (Beta(1, 1): almost every batch)


def test_hard_targets_smooth_as_the_standard_formula_and_the_loss_is_timms():
    from timm.loss import SoftTargetCrossEntropy
    from lpld.validate.hard import hard_label_loss, mix_rows, smooth_one_hot
    y = torch.tensor([0, 3, 999])
    t = smooth_one_hot(y, 1000, 0.8)
    assert torch.allclose(t[0, 0], torch.tensor(0.2008)) and torch.allclose(t[0, 1], torch.tensor(0.0008))
    torch.testing.assert_close(t, (1 - 0.8) * torch.nn.functional.one_hot(y, 1000).float() + 0.8 / 1000)
    torch.testing.assert_close(t.sum(1), torch.ones(3))
    x = torch.randn(4, 3, 8, 8)
    labels = torch.tensor([1, 2, 3, 0])
    mixed, target = mix_rows(x, x.flip(0), labels, labels.flip(0), 0.75, (2, 6, 0, 8), 4, 0.1)  # half the rows
    assert torch.equal(mixed[0, :, 2:6], x[3, :, 2:6]) and torch.equal(mixed[0, :, :2], x[0, :, :2])
    torch.testing.assert_close(target[0], 0.75 * smooth_one_hot(labels[:1], 4, 0.1)[0]
                               + 0.25 * smooth_one_hot(labels[3:], 4, 0.1)[0])
    logits = torch.randn(4, 4)
    torch.testing.assert_close(hard_label_loss(logits, target, "mean"), SoftTargetCrossEntropy()(logits, target))
    torch.testing.assert_close(hard_label_loss(logits, target), SoftTargetCrossEntropy()(logits, target) * 4)
    assert float(hard_label_loss(logits[:0], target[:0])) == 0.0


def test_hard_batches_are_seeded_split_over_ranks_and_drop_an_odd_row():
    from lpld.validate.hard import hard_steps
    steps = hard_steps(37, 16, seed=1, epoch=2)
    assert [s.global_rows for s in steps] == [16, 16, 4]  # 37 = 16 + 16 + 5: the odd row of the last is dropped
    assert steps == hard_steps(37, 16, seed=1, epoch=2) != hard_steps(37, 16, seed=1, epoch=3)
    order = [i for s in steps for i, _ in s.keys]
    assert len(set(order)) == 36 and set(order) <= set(range(37))
    for world in (2, 3):
        parts = [hard_steps(37, 16, 1, 2, rank, world) for rank in range(world)]
        for k, step in enumerate(steps):
            mine = [p[k] for p in parts]
            assert all(m.keys == step.keys for m in mine)  # every rank builds the same global batch
            assert sorted(r for m in mine for r in m.rows) == list(range(step.global_rows))
            for m in mine:  # and loads its rows with their CutMix partners (the reversed batch)
                assert set(m.needed) == set(m.rows) | {step.global_rows - 1 - r for r in m.rows}
    assert [s.global_rows for s in hard_steps(17, 16, 0, 0)] == [16]  # a last batch of 1 is no step


def test_authors_class_folders_label_by_their_number(tmp_path):
    from lpld.data import ImageFolder
    from lpld.validate.hard import class_targets
    for c in (0, 1, 101, 1000):
        (tmp_path / f"new{c:03d}").mkdir()
        (tmp_path / f"new{c:03d}" / "a.png").write_bytes(b"")
    images = ImageFolder(str(tmp_path))
    assert images.classes == ["new000", "new001", "new1000", "new101"]  # sorted by name
    assert class_targets(images) == [0, 1, 1000, 101]


# --- the trainer ------------------------------------------------------------------------------------------
import json  # noqa: E402
import os  # noqa: E402

from lpld.config import ConfigError  # noqa: E402
from lpld.labels import LabelStore  # noqa: E402
from lpld.utils.safe_load import safe_torch_load  # noqa: E402
from lpld.validate import run_validate  # noqa: E402
from lpld.validate import train as train_mod  # noqa: E402


@pytest.fixture(scope="module")
def store(demo_root, tmp_path_factory, make_label_store):
    """48 images, 6 batches of 8 per epoch, 3 stored epochs."""
    return make_label_store(os.path.join(demo_root, "train"), str(tmp_path_factory.mktemp("hald") / "labels"), None,
                            num_classes=4, batch_size=8, epochs=3, mix_type="cutmix")


def cfg_of(demo_root, store, out, **kw):
    return dict(dataset="demo", train_dir=os.path.join(demo_root, "train"), label_dir=store.path if store else None,
                val_dir=os.path.join(demo_root, "val"), batch_size=8, epochs=3, workers=0, output_dir=str(out),
                temperature=4.0, val_interval=1, progress=False, seed=0, hard_batch_size=8, adamw_lr=0.002,
                model="timm/test_resnet") | kw  # timm's 0.4 M-parameter ResNet: the demo's student, fast on a CPU


def _weights(out):
    return safe_torch_load(os.path.join(out, "checkpoint.pth"), what="checkpoint")["model"]


def test_a_hard_epoch_never_reads_the_label_store(demo_root, store, tmp_path, monkeypatch):
    """A store whose read fails while a hard epoch runs: the mixed run trains, and its soft epochs
    did read it. A hard-label run with a label_dir never opens the store at all."""
    real_read, real_epoch = LabelStore.read, train_mod.train_epoch
    state = {"hard": False, "soft_reads": 0}

    def read(self, batch_id):
        if state["hard"]:
            raise AssertionError(f"a hard epoch read stored batch {batch_id}")
        state["soft_reads"] += 1
        return real_read(self, batch_id)

    def epoch(kind, *args, **kwargs):  # everything the trainer does for one epoch of this kind
        state["hard"] = kind == "hard"
        try:
            return real_epoch(kind, *args, **kwargs)
        finally:
            state["hard"] = False

    monkeypatch.setattr(LabelStore, "read", read)
    monkeypatch.setattr(train_mod, "train_epoch", epoch)
    result = run_validate(cfg_of(demo_root, store, tmp_path / "mixed", label_plan="S7", train_epochs=4))
    assert result["label_plan_segments"] == [["hard", 1], ["soft", 2], ["hard", 1]]
    assert state["soft_reads"] >= 12  # two soft epochs of 6 stored batches
    rows = [json.loads(line) for line in open(tmp_path / "mixed" / "metrics.jsonl")]
    assert [r["kind"] for r in rows] == ["hard", "soft", "soft", "hard"]

    def no_store(*args, **kwargs):
        raise AssertionError("a hard-label run opened a label store")
    for module in (train_mod, train_mod.preflight):
        for name in ("open_label_store", "open_store_checked"):
            if hasattr(module, name):
                monkeypatch.setattr(module, name, no_store)
    from lpld.validate import inputs, loader
    monkeypatch.setattr(inputs, "open_label_store", no_store)
    monkeypatch.setattr(loader, "open_label_store", no_store)
    hard = run_validate(cfg_of(demo_root, store, tmp_path / "hard", label_plan="hard", train_epochs=2))
    assert hard["label_bytes_actual"] == 0 and hard["hard_epochs_trained"] == 2


def test_final_json_reports_the_soft_stores_bytes_and_zero_for_hard_labels(demo_root, store, tmp_path):
    mixed = run_validate(cfg_of(demo_root, store, tmp_path / "m", label_plan="soft:1,hard:1", train_epochs=2))
    final = json.load(open(tmp_path / "m" / "final.json"))
    assert final["label_bytes_actual"] == final["label_bytes_store"] == store.nbytes() == mixed["label_bytes_actual"]
    assert final["label_batches_used"] == 6 and final["pool_batches"] == 18 and not final["small_pool"]
    assert final["compression_actual"] == pytest.approx(final["label_bytes_full"] / store.nbytes(), rel=1e-3)
    assert (final["soft_epochs_trained"], final["hard_epochs_trained"]) == (1, 1)
    hard = run_validate(cfg_of(demo_root, None, tmp_path / "h", label_plan="hard", train_epochs=2))
    final = json.load(open(tmp_path / "h" / "final.json"))
    assert final == {**final, "label_bytes_actual": 0, "label_bytes_used": 0, "label_bytes_store": 0,
                     "label_batches_used": 0, "compression_actual": None, "label_plan": "hard"}
    assert hard["top1"] == final["top1"]


@pytest.mark.parametrize("interrupt, workers", [(4, 0), (7, 0), (5, 2)],
                         ids=["mid-hard-segment", "mid-soft-segment", "hard-segment-with-workers"])
def test_resume_inside_a_segment_equals_an_uninterrupted_run(demo_root, store, tmp_path, interrupt_at_epoch,
                                                             interrupt, workers):
    """soft 2 -> hard 3 -> soft 2, stopped when epoch ``interrupt`` starts (the 2nd hard epoch, the
    2nd epoch of the last soft segment) and resumed: the weights of an uninterrupted run, bit for
    bit (the soft pool's draw has a closed form; crops, order and CutMix are seeded by epoch)."""
    kw = dict(label_plan="soft:2,hard:3,soft:2", train_epochs=7, val_interval=7, workers=workers, ema=True)
    run_validate(cfg_of(demo_root, store, tmp_path / "a", **kw))
    interrupt_at_epoch(train_mod, lambda: run_validate(cfg_of(demo_root, store, tmp_path / "b", **kw)),
                       epoch=interrupt, function="train_epoch")
    assert safe_torch_load(tmp_path / "b" / "checkpoint.pth", what="checkpoint")["epoch"] == interrupt - 1
    with pytest.raises(ConfigError, match="other settings.*label_plan"):
        run_validate(cfg_of(demo_root, store, tmp_path / "b", resume=True, **{**kw, "label_plan": "S6"}))
    run_validate(cfg_of(demo_root, store, tmp_path / "b", resume=True, **kw))
    a, b = _weights(tmp_path / "a"), _weights(tmp_path / "b")
    for k in a:
        assert torch.equal(a[k], b[k]), k
    rows = [json.loads(line) for line in open(tmp_path / "b" / "metrics.jsonl")]
    assert [r["kind"] for r in rows] == ["soft"] * 2 + ["hard"] * 3 + ["soft"] * 2


def test_one_schedule_over_both_kinds_and_hard_only_without_label_dir(demo_root, tmp_path):
    hard = run_validate(cfg_of(demo_root, None, tmp_path / "h", label_plan="hard", train_epochs=3, cos=True))
    rows = [json.loads(line) for line in open(tmp_path / "h" / "metrics.jsonl")]
    assert [r["lr"] for r in rows] == pytest.approx([0.002 * 0.5 * (1 + math.cos(math.pi * e / 3)) for e in range(3)])
    assert [r["steps"] for r in rows] == [6, 6, 6] and all(r["train_images"] == 48 for r in rows)
    assert hard["label_plan_segments"] == [["hard", 3]]


# --- the pipeline and the report --------------------------------------------------------------------------
def test_label_plans_are_a_grid_axis_and_hard_rows_need_no_relabel_step():
    from lpld.config import parse_config
    from lpld.pipeline import PIPELINE_SCHEMA, Job, plan
    from lpld.pipeline.layout import label_dir
    cfg = parse_config(PIPELINE_SCHEMA, ["--methods", "lpld", "sre2l", "--prune-ratios", "0", "0.975",
                                         "--label-plans", "soft", "S6", "hard",
                                         "--extra-rows", "lpld:0.9:0:soft:5,hard:5", "lpld:0.9:0:hard"])
    steps = plan(cfg)
    validate = [s.name.split("/")[1] for s in steps if s.name.startswith("validate/")]
    assert validate == ["lpld_ipc10_1x", "lpld_ipc10_1x_S6", "lpld_ipc10_hard", "lpld_ipc10_40x", "lpld_ipc10_40x_S6",
                        "sre2l_ipc10_1x", "sre2l_ipc10_1x_S6", "sre2l_ipc10_hard", "sre2l_ipc10_40x",
                        "sre2l_ipc10_40x_S6", "lpld_ipc10_10x_soft5-hard5"]  # one hard row per image set
    relabel = [s.name for s in steps if s.stage == "relabel"]
    assert relabel == ["relabel/lpld_ipc10", "relabel/lpld_ipc10_40x", "relabel/sre2l_ipc10",
                       "relabel/sre2l_ipc10_40x", "relabel/lpld_ipc10_10x"]  # a soft row and its S6 twin share one
    job = Job(cfg)
    hard = job["validate/lpld_ipc10_hard/seed0"]
    assert hard.after == ("images/lpld_ipc10",)
    assert job["validate/lpld_ipc10_40x_S6/seed0"].after == ("relabel/lpld_ipc10_40x",)
    assert hard.row.label_plan == "hard" and label_dir(cfg, hard.row) is None


@pytest.mark.slow
def test_pipeline_reports_hard_and_mixed_rows_with_their_label_bytes(tmp_path):
    from test_pipeline import _argv
    from lpld.pipeline import main
    out = tmp_path / "out"
    argv = _argv(tmp_path, out)
    at = argv.index("--methods")
    argv[at:at + 8] = ["--methods", "lpld", "--prune-ratios", "0.5", "--seeds", "0", "--extra-rows",
                       "lpld:0.5:0:soft:2,hard:2", "lpld:0.5:0:hard"]
    hard_batch = tmp_path / "hard_batch.yaml"
    hard_batch.write_text("validate:\n  basic: {hard_batch_size: 4}\n")  # 6 distilled images
    main(argv + [str(hard_batch)])  # the last of --label-configs
    rows = json.load(open(out / "results.json"))
    assert [r["label_plan"] for r in rows] == ["soft", "soft:2,hard:2", "hard"]
    soft, mixed, hard = rows
    assert mixed["label_bytes_actual"] == soft["label_bytes_actual"] > 0 and hard["label_bytes_actual"] == 0
    assert mixed["compression_actual"] == soft["compression_actual"] and hard["compression_actual"] is None
    assert [p.name for p in (out / "labels").iterdir() if not p.name.startswith(".")] == ["lpld_ipc2_2x"]
    md = (out / "results.md").read_text()
    assert "| hard |" in md and "| ∞ | ∞ | 0 B |" in md
    finals = {p.parent.parent.name: json.load(open(p)) for p in out.glob("students/*/seed0/final.json")}
    assert finals["lpld_ipc2_hard"]["label_bytes_actual"] == 0
    assert finals["lpld_ipc2_2x_soft2-hard2"]["label_plan_segments"] == [["soft", 2], ["hard", 2]]


# --- the shipped HALD configs -------------------------------------------------------------------------------
def test_hald_configs_hold_their_settings_and_their_schedule():
    """hald_in1k.yaml: train.sh + train_fkd.py defaults + hyper.yaml:87; the LR of every epoch equals
    their LambdaLR 0.5 (1 + cos(pi e / E / eta)) with eta 2 over E = 300 (train_fkd.py:436-438)."""
    from lpld.config import parse_config
    from lpld.relabel import RELABEL_SCHEMA
    from lpld.validate import VALIDATE_SCHEMA
    from lpld.validate.optim import build_optimizer, build_scheduler
    here = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "relabel_and_validate",
                        "configs")
    cfg = train_mod.as_config(parse_config(VALIDATE_SCHEMA, ["--config", os.path.join(here, "hald_in1k.yaml"),
                                                             "--train-dir", "a", "--label-dir", "b", "--val-dir", "c"],
                                           sections=("common", "validate")))
    assert (cfg.batch_size, cfg.epochs, cfg.train_epochs, cfg.label_plan) == (16, 10, 300, "S6")
    assert (cfg.temperature, cfg.loss, cfg.adamw_lr, cfg.adamw_weight_decay, cfg.sgd) == (20.0, "kl", 1e-3, 0.01, False)
    assert (cfg.hard_batch_size, cfg.hard_label_smoothing, cfg.hard_cutmix_alpha, cfg.ema) == (16, 0.8, 1.0, False)
    assert cfg.amp is False and cfg.prune_ratio == 0.0 and cfg.plan_block is None  # fp32; n: the store's epochs
    assert train_mod.plan_segments(cfg, block=10) == [("soft", 75), ("hard", 150), ("soft", 75)]
    opt = build_optimizer(torch.nn.Linear(1, 1), cfg)
    sched = build_scheduler(opt, cfg, "imagenet")
    lrs = []
    for _ in range(300):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    theirs = [0.001 * 0.5 * (1 + math.cos(math.pi * e / 300 / 2)) for e in range(300)]
    assert lrs == pytest.approx(theirs, rel=1e-9) and lrs[-1] == pytest.approx(5.03e-4, rel=1e-3)
    relabel = parse_config(RELABEL_SCHEMA, ["--config", os.path.join(here, "hald_in1k.yaml")],
                           sections=("common", "relabel"))
    assert (relabel.batch_size, relabel.epochs, relabel.prune_ratio, relabel.fkd_seed, relabel.mix_type) == \
        (16, 10, 0.0, 42, "cutmix")
    tiny = train_mod.as_config(parse_config(VALIDATE_SCHEMA, ["--config", os.path.join(here, "hald_tiny.yaml"),
                                                              "--train-dir", "a", "--label-dir", "b", "--val-dir", "c"],
                                            sections=("common", "validate")))
    assert (tiny.dataset, tiny.loss, tiny.adamw_lr, tiny.cos, tiny.smoothing_lr, tiny.epochs) == \
        ("tiny", "kl", 1e-3, True, False, 2)  # hyper.yaml:30 [0.001, 1]; n = 100 // 50


def _hard_batches(demo_root, epoch, workers):
    from lpld.data import ImageFolder
    from lpld.validate.hard import HardEpochs
    hard = HardEpochs(ImageFolder(os.path.join(demo_root, "train")), 16, "demo", num_classes=4,
                      device=torch.device("cpu"), batch_size=6, seed=5, workers=workers)
    hard.set_epoch(epoch)
    return [(b.images, b.target, b.labels) for b in hard]


def test_a_hard_epoch_is_a_function_of_seed_and_epoch_alone(demo_root):
    """Order, crops and CutMix of hard epoch 3 do not depend on the global RNGs (torch's, numpy's),
    on the epochs before it, or on the worker count."""
    import numpy as np
    first = _hard_batches(demo_root, 3, workers=0)
    torch.manual_seed(123)
    np.random.seed(123)
    _hard_batches(demo_root, 2, workers=0)
    for again in (_hard_batches(demo_root, 3, workers=0), _hard_batches(demo_root, 3, workers=2)):
        assert len(again) == len(first) == 8
        for (x, t, y), (x2, t2, y2) in zip(first, again):
            assert torch.equal(x, x2) and torch.equal(t, t2) and torch.equal(y, y2)
    other = _hard_batches(demo_root, 4, workers=0)
    assert not torch.equal(other[0][0], first[0][0])
    assert any(not torch.equal(t, F.one_hot(y, 4).float() * 0.2 + 0.2) for _, t, y in first)  # CutMix mixed targets


def test_hard_epochs_crop_and_normalise_as_the_runs_dataset_and_the_tiny_student_has_their_stem(demo_root):
    """Hard epochs: RandomResizedCrop at scale (0.08, 1) (theirs: torchvision's default,
    train_fkd.py:402) + flip, normalised with the dataset's statistics, as the run's soft epochs
    (Tiny-ImageNet: its own mean/std, where their hyper.yaml:21-22 uses ImageNet's). The Tiny student:
    3x3 stride-1 conv1 and no max-pool, their CIFAR-style ResNet-18's stem (models/resnet.py:73-105)."""
    from torchvision import transforms as T
    from lpld.data import ImageFolder, normalization
    from lpld.data.transforms import TINY_MEAN
    from lpld.models import apply_tiny_stem, build_model
    from lpld.validate.hard import HardEpochs
    for dataset in ("tiny", "imagenet", "demo"):
        hard = HardEpochs(ImageFolder(os.path.join(demo_root, "train")), 16, dataset, num_classes=4,
                          device=torch.device("cpu"))
        steps = hard.loader.dataset.dataset.transform.transforms.transforms
        crop, norm = steps[0], steps[-1]
        assert isinstance(crop, T.RandomResizedCrop) and crop.scale == (0.08, 1.0) and crop.size == (16, 16)
        assert isinstance(steps[1], T.RandomHorizontalFlip) and steps[1].p == 0.5
        assert (tuple(norm.mean), tuple(norm.std)) == normalization(dataset)
    assert normalization("tiny")[0] == TINY_MEAN != (0.485, 0.456, 0.406)
    model = apply_tiny_stem(build_model("resnet18", 200))
    assert (model.conv1.kernel_size, model.conv1.stride) == ((3, 3), (1, 1))
    assert isinstance(model.maxpool, torch.nn.Identity)
