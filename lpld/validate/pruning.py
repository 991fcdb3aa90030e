"""Label pruning: which stored soft-label batches each training epoch uses.

The authors' semantics (``train_FKD_label_pruning_batch.py``, ``main()``):

* ``total = train_epochs * batches_per_epoch`` steps (``granularity`` batch / batch_to_epoch) or
  ``train_epochs`` (granularity epoch); the pool is the first ``int((1 - p) * total)`` of them in
  generation order -- exactly what a label store generated with ``--prune-ratio p`` holds.
* ``random``: every training epoch draws from the pool uniformly *with replacement*
  (``torch.randint``): one stored epoch (granularity epoch) or ``batches_per_epoch`` single
  batches (batch / batch_to_epoch).
* ``order``: epoch ``e`` uses stored epoch ``e`` (their code does not consult the pool here; with
  ``p > 0`` it would read batches that were never generated, so we cycle through the pool in
  order, which is identical for ``p = 0``).
* batch_to_epoch replaces a drawn batch that is the last one of its stored epoch by its
  predecessor ("drop last batch"; for ``p = 0`` the last batch may be partial).

* ``batch`` granularity assembles epochs like batch_to_epoch but without that remapping. (Their
  loop also steps the per-epoch LR lambda after every batch in this mode, so the LR reaches 0 after
  ``epochs`` batches; we keep the LR schedule per epoch for every granularity.)

Ours draws from a generator seeded by ``(seed, epoch)``, so an epoch's batches do not depend on
what ran before: a resumed run sees the same batches as an uninterrupted one. ``replacement=False``
(not in the paper) walks through a fresh permutation of the pool whenever the previous one is
used up, so every kept label is used equally often.

LPQLD's draw (``prune_mode="lpqld"``, their ``train_FKD_LPQLD.py`` 558, 580-586): the pool is
every stored batch and each epoch takes ``random.sample(pool, batches_per_epoch)``: distinct
batches within an epoch, no last-batch remapping. Ours draws the same way from a generator seeded
by ``(seed, epoch)`` (theirs: Python's unseeded ``random``). The pool is the first
``int((1 - p) * total)`` batches as above, or every stored batch when the store holds fewer (their
generator stops a few batches early).

Metric-chosen pools (the metrics the authors list in ``--prune_metric`` but leave unimplemented;
scores from :mod:`lpld.validate.selection`, definitions in ``docs/label_selection.md``): the pool
is the ``pool_items`` units (stored batches, or stored epochs for granularity epoch) with the
highest (``keep="high"``) or lowest (``keep="low"``) score among all ``unit_total`` stored units,
ties broken by the lower id; each epoch then draws from that pool exactly as ``random`` does. With
batch_to_epoch's last-batch remapping on, the last batch of every stored epoch is not a candidate
(it would be remapped to a batch the metric did not choose), so the batches trained on are
exactly the chosen ones.
"""
from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np
from ..config import compression_name

GRANULARITIES = ("epoch", "batch", "batch_to_epoch")
# score metrics: the pool is chosen by a score per stored unit (lpld.validate.selection)
SCORE_METRICS = ("el2n", "aum", "entropy", "forgetting", "yoco")
METRICS = ("random", "order", *SCORE_METRICS)
KEEP = ("high", "low")
PRUNE_MODES = ("lpld", "lpqld")  # lpld: torch.randint with replacement + remap; lpqld: random.sample


def pool_size(total: int, prune_ratio: float) -> int:
    """The authors' ``int((1 - prune_ratio) * total)``, float rounding included (so p=0.9 of 1000
    gives 99, exactly the number of batches their generator stores)."""
    if not 0.0 <= prune_ratio < 1.0:
        raise ValueError(f"prune_ratio must be in [0, 1); got {prune_ratio}")
    return int((1 - prune_ratio) * total)


def select_pool(scores: Sequence[float], count: int, keep: str = "high",
                candidates: Sequence[int] | None = None) -> list[int]:
    """Ids (ascending) of the ``count`` candidates with the highest / lowest score; ties go to the
    lower id. ``candidates`` defaults to every id of ``scores``."""
    if keep not in KEEP:
        raise ValueError(f"prune_keep must be one of {KEEP}; got {keep!r}")
    ids = np.arange(len(scores)) if candidates is None else np.asarray(candidates, dtype=np.int64)
    values = np.asarray(scores, dtype=np.float64)[ids]
    if np.isnan(values).any():
        raise ValueError(f"label-selection scores hold NaN (unit {int(ids[np.isnan(values)][0])}); "
                         f"the stored logits or the scoring model are broken")
    if count > len(ids):
        raise ValueError(f"cannot keep {count} units: only {len(ids)} are candidates")
    order = np.lexsort((ids, -values if keep == "high" else values))
    return sorted(int(i) for i in ids[order[:count]])


@dataclasses.dataclass(frozen=True)
class PruningPlan:
    """The batches every training epoch uses. Global batch id = stored epoch * batches_per_epoch +
    index within that epoch (the label store's ids)."""

    batches_per_epoch: int
    train_epochs: int
    prune_ratio: float = 0.0
    metric: str = "random"
    granularity: str = "batch_to_epoch"
    replacement: bool = True
    remap_last_batch: bool = True
    seed: int = 0
    # score metrics: one score per stored unit (length unit_total), and which end to keep
    scores: tuple[float, ...] | None = None
    keep: str = "high"
    # "lpqld": their random.sample draw; ``stored_batches`` caps its pool at what the store holds
    mode: str = "lpld"
    stored_batches: int | None = None

    def __post_init__(self) -> None:
        if self.mode not in PRUNE_MODES:
            raise ValueError(f"prune_mode must be one of {PRUNE_MODES}; got {self.mode!r}")
        if self.mode == "lpqld":
            if self.metric != "random" or self.unit != "batch":
                raise ValueError(f"prune_mode lpqld draws single batches at random (their random.sample); it "
                                 f"takes prune_metric random and granularity batch, not {self.metric!r} / "
                                 f"{self.granularity!r}")
            if self.pool_items < self.batches_per_epoch:
                raise ValueError(f"prune_mode lpqld draws {self.batches_per_epoch} distinct batches per epoch "
                                 f"(their random.sample), but the pool holds {self.pool_items}; use prune_mode lpld "
                                 f"(draws with replacement) or a store with more batches")
        if self.granularity not in GRANULARITIES:
            raise ValueError(f"granularity must be one of {GRANULARITIES}; got {self.granularity!r}")
        if self.metric not in METRICS:
            raise ValueError(f"prune_metric must be one of {METRICS}; got {self.metric!r}")
        if self.batches_per_epoch < 1 or self.train_epochs < 1:
            raise ValueError("batches_per_epoch and train_epochs must be positive")
        if self.pool_items < 1:
            raise ValueError(f"prune_ratio {self.prune_ratio} leaves an empty pool "
                             f"({self.unit_total} stored {self.unit}(s) in total)")
        if self.by_score:
            if self.scores is None or len(self.scores) != self.unit_total:
                got = "none" if self.scores is None else len(self.scores)
                raise ValueError(f"prune_metric {self.metric!r} needs one score per stored {self.unit} "
                                 f"({self.unit_total}); got {got}")
            object.__setattr__(self, "scores", tuple(float(v) for v in self.scores))
            self.pool_ids  # validates keep, NaN and the candidate count now, not at epoch 1
        elif self.scores is not None:
            raise ValueError(f"prune_metric {self.metric!r} takes no scores")

    # --- the pool ----------------------------------------------------------------------------------
    @property
    def unit(self) -> str:
        return "epoch" if self.granularity == "epoch" else "batch"

    @property
    def unit_total(self) -> int:
        return self.train_epochs * (1 if self.unit == "epoch" else self.batches_per_epoch)

    @property
    def pool_items(self) -> int:
        """Pool size in the plan's unit (stored epochs or stored batches)."""
        n = pool_size(self.unit_total, self.prune_ratio)
        if self.mode == "lpqld" and self.stored_batches is not None:
            n = min(n, int(self.stored_batches))
        return n

    @property
    def by_score(self) -> bool:
        return self.metric in SCORE_METRICS

    @property
    def pool_batches(self) -> int:
        """Number of stored batches in the pool (random/order: ids ``0 .. pool_batches - 1``)."""
        n = self.pool_items
        return n * self.batches_per_epoch if self.unit == "epoch" else n

    @property
    def required_batches(self) -> int:
        """The store must hold stored batches ``0 .. required_batches - 1``: the pool for random and
        order; every candidate for a score metric (it ranks them all)."""
        if not self.by_score:
            return self.pool_batches
        return self.unit_total * (self.batches_per_epoch if self.unit == "epoch" else 1)

    @property
    def candidate_ids(self) -> list[int]:
        """Units a score metric may choose (all but the last batch of each stored epoch when
        batch_to_epoch remaps it)."""
        ids = range(self.unit_total)
        if self.unit == "batch" and self._remaps:
            return [b for b in ids if (b + 1) % self.batches_per_epoch]
        return list(ids)

    @property
    def pool_ids(self) -> list[int]:
        """Units of the pool, ascending: ``0 .. pool_items - 1`` for random and order."""
        cached = self.__dict__.get("_pool_ids")
        if cached is None:
            if self.by_score:
                cached = select_pool(self.scores, self.pool_items, self.keep, self.candidate_ids)
            else:
                cached = list(range(self.pool_items))
            self.__dict__["_pool_ids"] = cached
        return cached

    def used_batch_ids(self) -> set[int]:
        """Every stored batch a full run can touch (after the last-batch remapping)."""
        if self.mode == "lpqld":
            return set(range(self.pool_items))
        if self.by_score:
            if self.unit == "epoch":
                bpe = self.batches_per_epoch
                return {e * bpe + k for e in self.pool_ids for k in range(bpe)}
            return set(self.pool_ids)
        ids = range(self.pool_batches)
        return {self._remap(b) for b in ids} if self._remaps else set(ids)

    # --- per-epoch assembly ---------------------------------------------------------------------------
    def epoch_batches(self, epoch: int) -> list[int]:
        """Global ids of the stored batches trained on in ``epoch``, in training order."""
        if not 0 <= epoch < self.train_epochs:
            raise IndexError(f"epoch {epoch} outside 0..{self.train_epochs - 1}")
        bpe = self.batches_per_epoch
        if self.mode == "lpqld":  # distinct within the epoch, no remapping
            rng = np.random.default_rng([self.seed, epoch])
            return [int(b) for b in rng.choice(self.pool_items, size=bpe, replace=False)]
        draws = self._draw(epoch, 1 if self.unit == "epoch" else bpe)
        if self.by_score:  # draws are positions in the chosen pool
            pool = self.pool_ids
            draws = [pool[k] for k in draws]
        if self.unit == "epoch":
            stored = draws[0]
            return list(range(stored * bpe, (stored + 1) * bpe))
        return [self._remap(b) for b in draws] if self._remaps and not self.by_score else draws

    def _draw(self, epoch: int, count: int) -> list[int]:
        n = self.pool_items
        if self.metric == "order":
            return [(epoch * count + i) % n for i in range(count)]
        if self.replacement:
            rng = np.random.default_rng([self.seed, epoch])
            return rng.integers(0, n, size=count).tolist()
        # without replacement: position k of the stream made of successive permutations of the pool
        start = epoch * count
        out = []
        for pos in range(start, start + count):
            cycle, offset = divmod(pos, n)
            out.append(int(self._permutation(cycle)[offset]))
        return out

    def _permutation(self, cycle: int) -> np.ndarray:
        cache = self.__dict__.setdefault("_perm_cache", {})
        if cycle not in cache:
            if len(cache) > 4:
                cache.clear()
            cache[cycle] = np.random.default_rng([self.seed, 1 << 30, cycle]).permutation(self.pool_items)
        return cache[cycle]

    @property
    def _remaps(self) -> bool:
        return self.granularity == "batch_to_epoch" and self.remap_last_batch and self.batches_per_epoch > 1

    def _remap(self, batch_id: int) -> int:
        return batch_id - 1 if (batch_id + 1) % self.batches_per_epoch == 0 else batch_id

    def describe(self) -> str:
        ratio = compression_name(self.prune_ratio)
        which = (f"the {self.pool_items} {'highest' if self.keep == 'high' else 'lowest'}-{self.metric} of "
                 f"{len(self.candidate_ids)} stored" if self.by_score else f"first {self.pool_items} stored")
        return (f"prune ratio {self.prune_ratio} {ratio}: pool = {which} {self.unit}(s) ({self.pool_batches} "
                f"batches); metric {self.metric}, granularity {self.granularity}, "
                f"{'with' if self.replacement else 'without'} replacement"
                + ("; LPQLD draw (distinct batches per epoch)" if self.mode == "lpqld" else ""))
