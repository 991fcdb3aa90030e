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
