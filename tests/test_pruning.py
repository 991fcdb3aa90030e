"""Label pruning: pool sizes and how epochs are assembled from the pool (authors' semantics)."""
from collections import Counter

import pytest

from lpld.labels import plan_batches
from lpld.validate.pruning import PruningPlan, pool_size

PAPER_RATIOS = (0.0, 0.9, 0.95, 0.97, 0.975)


def authors_pool(total_steps: int, prune_ratio: float) -> list[int]:
    """train_FKD_label_pruning_batch.py: pool = list(range(total_steps))[:int((1-p)*total_steps)]."""
    return list(range(total_steps))[:int((1 - prune_ratio) * total_steps)]


@pytest.mark.parametrize("ratio", PAPER_RATIOS)
@pytest.mark.parametrize("num_images,batch_size,epochs", [(10000, 64, 100), (10000, 128, 300),
                                                          (50 * 200, 100, 7), (1000, 1000, 300)])
def test_pool_matches_authors_and_the_generated_store(ratio, num_images, batch_size, epochs):
    # the relabel stage stores int(epochs * batches_per_epoch * (1 - p)) batches (drop_last if p > 0)
    bpe, planned, _ = plan_batches(num_images, batch_size, epochs, ratio)
    plan = PruningPlan(batches_per_epoch=bpe, train_epochs=epochs, prune_ratio=ratio)
    assert plan.pool_batches == len(authors_pool(epochs * bpe, ratio)) == planned
    assert max(plan.used_batch_ids()) < planned


def test_pool_float_rounding_like_the_authors():
    assert pool_size(1000, 0.9) == 99  # (1 - 0.9) * 1000 = 99.99999999999997
    assert pool_size(1000, 0.975) == 25 and pool_size(100, 0.0) == 100


def test_paper_compression_ratios_tiny():
    # Tiny-ImageNet IPC50: 10,000 images, batch 64, 100 epochs; 40x keeps 1/40 of the labels
    bpe, _, _ = plan_batches(10000, 64, 100, 0.975)
    plan = PruningPlan(bpe, 100, 0.975)
    assert bpe == 156 and plan.pool_batches == 390
    assert plan.pool_batches * 40 == pytest.approx(100 * bpe, rel=0.01)


def test_random_batch_to_epoch_draws_uniformly_from_the_pool_with_replacement():
    plan = PruningPlan(batches_per_epoch=10, train_epochs=200, prune_ratio=0.9, seed=3)
    assert plan.pool_batches == 199  # int((1 - 0.9) * 2000)
    counts = Counter()
    repeated_within_an_epoch = 0
    for e in range(200):
        ids = plan.epoch_batches(e)
        assert len(ids) == 10 and all(0 <= b < 199 for b in ids)
        assert all((b + 1) % 10 for b in ids)  # the last batch of a stored epoch is never used
        repeated_within_an_epoch += len(ids) != len(set(ids))
        counts.update(ids)
    assert repeated_within_an_epoch > 0  # with replacement
    # ids before a stored epoch's last get two shares, the others one: 2000 draws over 199 items
    plain = [counts[b] for b in range(199) if (b + 2) % 10 and (b + 1) % 10]
    assert 5 <= sum(plain) / len(plain) <= 15


def test_without_replacement_uses_every_pool_batch_equally():
    plan = PruningPlan(batches_per_epoch=8, train_epochs=40, prune_ratio=0.75, granularity="batch",
                       replacement=False, seed=1)
    pool = plan.pool_batches  # 80 = 10 epochs of draws per pass over the pool
    assert pool == 80
    counts = Counter(b for e in range(40) for b in plan.epoch_batches(e))
    assert set(counts) == set(range(pool)) and set(counts.values()) == {4}
    first_pass = [b for e in range(10) for b in plan.epoch_batches(e)]
    assert sorted(first_pass) == list(range(pool))


def test_epoch_granularity_reuses_whole_stored_epochs():
    plan = PruningPlan(batches_per_epoch=5, train_epochs=100, prune_ratio=0.75, granularity="epoch", seed=0)
    assert plan.pool_items == 25 and plan.pool_batches == 125
    for e in range(30):
        ids = plan.epoch_batches(e)
        stored = ids[0] // 5
        assert ids == list(range(stored * 5, stored * 5 + 5)) and stored < 25


def test_order_without_pruning_is_the_generation_order():
    # the authors' setting for ratio 0.0: prune_metric order, granularity epoch
    plan = PruningPlan(batches_per_epoch=4, train_epochs=6, prune_ratio=0.0, metric="order", granularity="epoch")
    assert [plan.epoch_batches(e) for e in range(6)] == [list(range(4 * e, 4 * e + 4)) for e in range(6)]
    b2e = PruningPlan(batches_per_epoch=4, train_epochs=6, metric="order", granularity="batch_to_epoch")
    assert b2e.epoch_batches(1) == [4, 5, 6, 6]  # authors' "drop last batch" remapping
    keep = PruningPlan(batches_per_epoch=4, train_epochs=6, metric="order", remap_last_batch=False)
    assert keep.epoch_batches(1) == [4, 5, 6, 7]


def test_order_with_pruning_cycles_through_the_pool():
    plan = PruningPlan(batches_per_epoch=4, train_epochs=8, prune_ratio=0.75, metric="order", granularity="batch")
    assert plan.pool_batches == 8
    assert [plan.epoch_batches(e) for e in range(3)] == [[0, 1, 2, 3], [4, 5, 6, 7], [0, 1, 2, 3]]


def test_epochs_are_reproducible_and_seed_dependent():
    a = PruningPlan(batches_per_epoch=10, train_epochs=50, prune_ratio=0.9, seed=7)
    b = PruningPlan(batches_per_epoch=10, train_epochs=50, prune_ratio=0.9, seed=7)
    c = PruningPlan(batches_per_epoch=10, train_epochs=50, prune_ratio=0.9, seed=8)
    assert [a.epoch_batches(e) for e in (3, 0, 49)] == [b.epoch_batches(e) for e in (3, 0, 49)]
    assert any(a.epoch_batches(e) != c.epoch_batches(e) for e in range(5))


def test_single_batch_epochs_are_not_remapped():
    # ImageNet-1K IPC1: one batch of 1000 per epoch; remapping would give batch -1
    plan = PruningPlan(batches_per_epoch=1, train_epochs=300, prune_ratio=0.9)
    assert all(0 <= b < 30 for e in range(300) for b in plan.epoch_batches(e))


def test_bad_plans_fail_clearly():
    with pytest.raises(ValueError, match="empty pool"):
        PruningPlan(batches_per_epoch=1, train_epochs=10, prune_ratio=0.95)
    with pytest.raises(ValueError, match="granularity"):
        PruningPlan(batches_per_epoch=4, train_epochs=2, granularity="step")
    with pytest.raises(ValueError, match="prune_ratio"):
        pool_size(10, 1.0)


def test_lpqld_draw_is_distinct_per_epoch_without_remapping():
    """prune_mode lpqld: random.sample(pool, batches_per_epoch) (train_FKD_LPQLD.py 580-586):
    distinct batches within an epoch, a stored epoch's last batch is drawn as any other, the pool
    is capped at what the store holds (their generator stops a few batches early)."""
    plan = PruningPlan(batches_per_epoch=10, train_epochs=30, prune_ratio=0.9, mode="lpqld", stored_batches=28)
    assert plan.pool_batches == 28 and plan.used_batch_ids() == set(range(28))
    drawn = [plan.epoch_batches(e) for e in range(30)]
    assert all(len(set(ids)) == len(ids) == 10 and max(ids) < 28 for ids in drawn)
    assert any(b in (9, 19) for ids in drawn for b in ids)  # last batches of stored epochs stay
    assert drawn == [plan.epoch_batches(e) for e in range(30)] and len({tuple(d) for d in drawn}) == 30
    lpld = PruningPlan(batches_per_epoch=10, train_epochs=30, prune_ratio=0.9)
    assert not any(b in (9, 19) for e in range(30) for b in lpld.epoch_batches(e))  # LPLD remaps them
    with pytest.raises(ValueError, match="draws 10 distinct batches per epoch .* the pool holds 4"):
        PruningPlan(batches_per_epoch=10, train_epochs=5, prune_ratio=0.9, mode="lpqld")  # int(0.1 * 50) = 4
    with pytest.raises(ValueError, match="takes prune_metric random and granularity batch"):
        PruningPlan(batches_per_epoch=10, train_epochs=30, granularity="epoch", mode="lpqld")
