"""The label plan of a student run: which kind each training epoch is, and which stored batches
the soft epochs of a mixed plan train on.

Two kinds of epoch (:data:`KINDS`): ``soft``, knowledge distillation on the stored soft labels
(what LPLD trains on), and ``hard``, the distilled images with their own class labels, which cost
no storage (HALD: Cui et al., "Hard Labels In! Rethinking the Role of Hard Labels in Mitigating
Local Semantic Drift", ICML 2026; their code github Jiacheng8/HALD at commit ffbca04e, cited below
as ``train_fkd.py:LINE`` for ``validate/train_fkd.py`` and ``train.sh:LINE`` for
``validate/scripts/imagenet1k/train.sh``).

``label_plan`` is one of

* ``soft``: every epoch soft, the LPLD trainer (:class:`~lpld.validate.pruning.PruningPlan` draws
  the batches; nothing here applies);
* ``hard``: every epoch hard, no label store at all (0 label bytes);
* HALD's settings ``S1`` .. ``S8`` by name (``train_fkd.py:144-165``; their default and the one
  their script runs is ``S6``, ``train_fkd.py:128``), with ``S`` soft and ``H`` hard epochs,
  ``S + H`` the run's epochs (``train_fkd.py:142``):

  ====  ======================================================================================
  S1    hard H, soft S
  S2    blocks of ``n`` epochs over ``S + H``, hard first, alternating; a last block of
        ``(S + H) % n`` epochs, when not 0, takes the next kind (``generate_epoch_plan``,
        ``train_fkd.py:178-211``)
  S3    the same with blocks of ``2n``, hard first
  S4    blocks of ``n``, soft first
  S5    blocks of ``2n``, soft first
  S6    soft ``S // 2``, hard H, soft ``S - S // 2``
  S7    hard ``H // 2``, soft S, hard ``H - H // 2``
  S8    soft S, hard H
  ====  ======================================================================================

  (in S2-S5 the alternation, not S and H, decides the split; only their sum counts);
* an explicit list of segments, ``soft:75,hard:150,soft:75``.

Soft epochs of every plan but ``soft`` draw their stored batches as HALD's loop does
(``train_fkd.py:458-477``, :class:`SoftPool`): the pool is the first ``n`` stored epochs'
batches; whenever it is empty it is refilled with a fresh permutation of them, every epoch (hard
ones too: they take their share and throw it away) takes the next ``batches_per_epoch`` ids, and
the pool is emptied at the start of every segment. Their generators are seeded
``fkd_seed + times`` (``fkd_seed`` 42, ``train_fkd.py:122``), ``times`` counting the
permutations drawn so far; ours adds ``seed * 2**20`` so that students of different seeds never
share a permutation (seed 0 draws exactly theirs). The draw of an epoch has a closed form
(:meth:`SoftPool.slot`), so a resumed run trains on the batches of an uninterrupted one.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Sequence

import torch

KINDS = ("soft", "hard")
SETTINGS = ("S1", "S2", "S3", "S4", "S5", "S6", "S7", "S8")  # train_fkd.py:144-163
BLOCK_SETTINGS = {"S2": (1, "hard"), "S3": (2, "hard"), "S4": (1, "soft"), "S5": (2, "soft")}  # (x n, first)
HALD_FKD_SEED = 42  # their --fkd_seed default (train_fkd.py:122): the first permutation's seed
SEED_STRIDE = 1 << 20  # our student seed moves the permutation seeds by this many
PLAN_HELP = "soft | hard | S1..S8 (HALD's settings) | a list KIND:EPOCHS,... (e.g. soft:75,hard:150,soft:75)"


def parse_segments(text: str) -> list[tuple[str, int]] | None:
    """An explicit plan ``KIND:EPOCHS,...`` as ``[(kind, epochs), ...]``; None when ``text`` is
    not such a list. Raises ValueError for a list with a bad element."""
    if ":" not in text:
        return None
    out = []
    for part in text.split(","):
        kind, sep, count = part.strip().partition(":")
        if not sep or kind not in KINDS:
            raise ValueError(f"segment {part.strip()!r} is not KIND:EPOCHS with KIND soft or hard")
        try:
            epochs = int(count)
        except ValueError:
            raise ValueError(f"segment {part.strip()!r} has no whole number of epochs") from None
        if epochs < 0:
            raise ValueError(f"segment {part.strip()!r} has a negative number of epochs")
        out.append((kind, epochs))
    return out


def label_plan_rule(value, values) -> str | None:
    """``Option(check=...)``: what is wrong with a ``label_plan`` value, or None."""
    text = str(value)
    if text in KINDS or text in SETTINGS:
        return None
    try:
        listed = parse_segments(text)
    except ValueError as err:
        return f"must be {PLAN_HELP}; {err}"
    if listed is None:
        return f"must be {PLAN_HELP}; {text!r} is none of them (HALD's settings are S1 to S8)"
    return None


def is_mixed(label_plan: str) -> bool:
    """A plan of HALD's loop: anything but ``soft`` (the LPLD trainer) and ``hard`` (no store)."""
    return label_plan not in KINDS


def needs_block(label_plan: str) -> bool:
    """S2-S5 alternate blocks of ``n`` epochs."""
    return label_plan in BLOCK_SETTINGS


def split_epochs(label_plan: str, train_epochs: int, soft_epochs: int = -1, hard_epochs: int = -1) -> tuple[int, int]:
    """(S, H) of a setting S1-S8: as given, or the rest of ``train_epochs`` for the one left at -1;
    both unset: ``S = train_epochs // 2`` and ``H`` the rest (their script: 150 soft of 300,
    ``hard_epochs=$((300 - soft_epochs))``, train.sh:25-26). Raises ValueError when they do not
    add up to ``train_epochs`` (theirs trains ``S + H`` epochs, ``train_fkd.py:142``)."""
    s, h = int(soft_epochs), int(hard_epochs)
    if s < 0 and h < 0:
        s = train_epochs // 2
    if s < 0:
        s = train_epochs - h
    if h < 0:
        h = train_epochs - s
    if s < 0 or h < 0 or s + h != train_epochs:
        raise ValueError(f"label_plan {label_plan}: soft_epochs {soft_epochs} + hard_epochs {hard_epochs} do not "
                         f"add up to the {train_epochs} epochs the run trains; set them to add up to {train_epochs} "
                         f"(or leave one at -1: it takes the rest)")
    return s, h


def segments(label_plan: str, train_epochs: int, soft_epochs: int = -1, hard_epochs: int = -1,
             block: int | None = None) -> list[tuple[str, int]]:
    """The plan as ``[(kind, epochs), ...]`` in training order, segments of 0 epochs included (HALD
    empties its pool at each segment start, even of an empty one). ``block``: HALD's ``n`` (S2-S5).
    Raises ValueError when the epochs do not add up to ``train_epochs``."""
    if label_plan in KINDS:
        other = "hard" if label_plan == "soft" else "soft"
        own, rest = (soft_epochs, hard_epochs) if label_plan == "soft" else (hard_epochs, soft_epochs)
        if own not in (-1, train_epochs) or rest not in (-1, 0):
            raise ValueError(f"label_plan {label_plan} trains all {train_epochs} epochs {label_plan}, but "
                             f"{label_plan}_epochs {own} / {other}_epochs {rest} are set; leave them at -1 or "
                             f"use a plan with both kinds (S1..S8, or a list such as {label_plan}:{train_epochs // 2},"
                             f"{other}:{train_epochs - train_epochs // 2})")
        return [(label_plan, train_epochs)]
    listed = parse_segments(label_plan)
    if listed is not None:
        total = sum(n for _, n in listed)
        soft = sum(n for k, n in listed if k == "soft")
        if total != train_epochs:
            raise ValueError(f"label_plan {label_plan!r} holds {total} epochs, but the run trains {train_epochs}; "
                             f"make its segments add up to {train_epochs} (or set --train-epochs {total})")
        for name, given, have in (("soft_epochs", soft_epochs, soft), ("hard_epochs", hard_epochs, total - soft)):
            if given not in (-1, have):
                raise ValueError(f"label_plan {label_plan!r} holds {have} {name[:4]} epochs, but {name} is {given}; "
                                 f"leave {name} at -1 or make them agree")
        return listed
    if label_plan not in SETTINGS:
        raise ValueError(f"label_plan {label_plan!r} is not {PLAN_HELP}")
    s, h = split_epochs(label_plan, train_epochs, soft_epochs, hard_epochs)
    if label_plan == "S1":
        return [("hard", h), ("soft", s)]
    if label_plan == "S6":
        return [("soft", s // 2), ("hard", h), ("soft", s - s // 2)]
    if label_plan == "S7":
        return [("hard", h // 2), ("soft", s), ("hard", h - h // 2)]
    if label_plan == "S8":
        return [("soft", s), ("hard", h)]
    if block is None or block < 1:
        raise ValueError(f"label_plan {label_plan} alternates blocks of plan_block epochs; set --plan-block "
                         f"(HALD's n, a positive number), got {block}")
    times, kind = BLOCK_SETTINGS[label_plan]
    size, total = times * block, s + h
    lengths = [size] * (total // size) + ([total % size] if total % size else [])
    out = []
    for length in lengths:
        out.append((kind, length))
        kind = "soft" if kind == "hard" else "hard"
    return out


def epoch_kinds(plan_segments: Sequence[tuple[str, int]]) -> list[str]:
    """The kind of every epoch, in training order."""
    return [kind for kind, length in plan_segments for _ in range(length)]


def describe_segments(plan_segments: Sequence[tuple[str, int]]) -> str:
    return " -> ".join(f"{kind} {length}" for kind, length in plan_segments if length)


@dataclasses.dataclass(frozen=True)
class SoftPool:
    """HALD's draw of stored batches for the soft epochs of a mixed plan (module docstring).

    ``segments``: the plan (:func:`segments`); ``block``: ``n``, the stored epochs in the pool
    (ids ``0 .. block * batches_per_epoch - 1``); ``seed``: the student's."""

    segments: tuple[tuple[str, int], ...]
    block: int
    batches_per_epoch: int
    seed: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "segments", tuple((str(k), int(n)) for k, n in self.segments))
        if self.block < 1 or self.batches_per_epoch < 1:
            raise ValueError(f"the soft pool needs at least one stored epoch of at least one batch; got "
                             f"{self.block} epoch(s) of {self.batches_per_epoch} batch(es)")

    @property
    def train_epochs(self) -> int:
        return sum(n for _, n in self.segments)

    @property
    def pool_batches(self) -> int:
        return self.block * self.batches_per_epoch

    def kind(self, epoch: int) -> str:
        return self.slot(epoch)[0]

    def slot(self, epoch: int) -> tuple[str, int, int]:
        """(kind, permutation number, first position) of ``epoch``: with ``P_s`` the permutations
        drawn by the segments before its own and ``j`` its place in its segment, permutation
        ``P_s + j // n`` from position ``(j % n) * batches_per_epoch``."""
        if not 0 <= epoch < self.train_epochs:
            raise IndexError(f"epoch {epoch} outside 0..{self.train_epochs - 1}")
        start, drawn = 0, 0
        for kind, length in self.segments:
            if epoch < start + length:
                j = epoch - start
                return kind, drawn + j // self.block, (j % self.block) * self.batches_per_epoch
            drawn += math.ceil(length / self.block)
            start += length
        raise IndexError(epoch)  # unreachable: the range was checked

    def generator_seed(self, permutation: int) -> int:
        return HALD_FKD_SEED + permutation + self.seed * SEED_STRIDE

    def permutation(self, number: int) -> list[int]:
        cache = self.__dict__.setdefault("_perms", {})
        if number not in cache:
            if len(cache) > 4:
                cache.clear()
            g = torch.Generator().manual_seed(self.generator_seed(number))
            cache[number] = torch.randperm(self.pool_batches, generator=g).tolist()
        return cache[number]

    def epoch_batches(self, epoch: int) -> list[int]:
        """Stored batch ids of soft epoch ``epoch``, in training order."""
        kind, number, first = self.slot(epoch)
        if kind != "soft":
            raise ValueError(f"epoch {epoch} is a {kind} epoch: it trains on no stored batch")
        return self.permutation(number)[first:first + self.batches_per_epoch]

    def used_batch_ids(self) -> set[int]:
        """Every stored batch the soft epochs train on."""
        used: set[int] = set()
        for epoch, kind in enumerate(epoch_kinds(self.segments)):
            if kind == "soft":
                used.update(self.epoch_batches(epoch))
        return used

    def describe(self) -> str:
        return (f"label plan {describe_segments(self.segments)}; soft epochs draw {self.batches_per_epoch} batches "
                f"each from permutations of the first {self.block} stored epoch(s) ({self.pool_batches} batches), "
                f"the pool emptied at every segment and hard epochs using up their share (HALD's draw)")
