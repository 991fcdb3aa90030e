"""The job as a list of named steps (:func:`plan`), each carrying what it runs on.

A :class:`Step` knows its stage, its image set, its row and its seed, so nothing downstream reads
them back out of its name; the name (``<stage folder>/...``: ``squeeze/teacher``,
``images/lpld_ipc10``, ``relabel/<store>``, ``validate/<row>/seed<k>``) is what records, logs,
``--dry-run`` and the cluster launcher show and look steps up by. A :class:`Job` is one plan with
the state of one invocation: the statuses computed so far (:mod:`lpld.pipeline.records`) and the
steps run in it.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
from typing import Any, Iterator

from .layout import Row, label_dir, rows
from .schema import resolve_dataset

@dataclasses.dataclass(frozen=True)
class Step:
    name: str                  # unique, "/"-separated
    after: tuple[str, ...]     # steps that must finish first
    kind: str                  # train | recover | relabel | light: what the launcher runs it on
    # data | teacher | class_stats | images | diversity | relabel | validate | report
    stage: str = ""
    method: str | None = None  # the image source (images, relabel and validate steps)
    ipc: int | None = None
    row: Row | None = None     # relabel steps: the first row of the store; validate steps: the row
    seed: int | None = None    # validate steps

    @property
    def images(self) -> str:
        """The name of the step that makes this step's image set."""
        return f"images/{self.method}_ipc{self.ipc}"


def relabel_name(cfg: argparse.Namespace, row: Row) -> str:
    """Rows that share a label store (full mode: every ratio of an image set; a soft row and its
    mixed-plan twin) share its step."""
    return "relabel/" + os.path.basename(label_dir(cfg, row))


def plan(cfg: argparse.Namespace) -> list[Step]:
    """Every step of the job, in an order that runs each after the steps it needs."""
    resolve_dataset(cfg)
    steps: list[Step] = []
    teacher_steps: tuple[str, ...] = ()
    if cfg.dataset == "demo":  # generated at data_path unless the same demo dataset is there
        steps.append(Step("data/demo", (), "light", "data"))
    data = tuple(s.name for s in steps)
    if cfg.teacher is None:
        steps += [Step("squeeze/teacher", data, "train", "teacher"),
                  Step("squeeze/class_stats", ("squeeze/teacher",), "light", "class_stats")]
        teacher_steps = ("squeeze/class_stats",)
    table = rows(cfg)
    image_sets = [Step(f"images/{m}_ipc{i}", data + teacher_steps, "recover", "images", m, i)
                  for m, i in dict.fromkeys((r.method, r.ipc) for r in table)]
    steps += image_sets
    if cfg.diversity:
        steps.append(Step("analysis/diversity", tuple(s.name for s in image_sets) + teacher_steps, "light",
                          "diversity"))
    seen = set()
    for row in table:
        if row.hard_only:  # class labels only: no label store to make
            after = (f"images/{row.method}_ipc{row.ipc}",)
        else:
            rel = relabel_name(cfg, row)
            after = (rel,)
            if rel not in seen:
                seen.add(rel)
                steps.append(Step(rel, (f"images/{row.method}_ipc{row.ipc}",) + teacher_steps, "relabel",
                                  "relabel", row.method, row.ipc, row))
        for seed in cfg.seeds:
            steps.append(Step(f"validate/{row.tag}/seed{int(seed)}", after, "train", "validate", row.method,
                              row.ipc, row, int(seed)))
    steps.append(Step("report", tuple(s.name for s in steps), "light", "report"))
    return steps


class Job:
    """One plan of ``cfg`` and the state of this invocation: ``status`` (step name -> the
    :class:`~lpld.pipeline.records.Status` computed so far) and ``ran`` (the steps run)."""

    def __init__(self, cfg: argparse.Namespace) -> None:
        self.cfg = cfg
        self.plan = plan(cfg)
        self.steps = {s.name: s for s in self.plan}
        self.status: dict[str, Any] = {}
        self.ran: set[str] = set()

    def __iter__(self) -> Iterator[Step]:
        return iter(self.plan)

    def __getitem__(self, name: str) -> Step:
        try:
            return self.steps[name]
        except KeyError:
            raise KeyError(f"no step {name!r} in this plan; steps: {list(self.steps)}") from None

    def of(self, stage: str) -> list[Step]:
        """The steps of one stage (:attr:`Step.stage`), in plan order."""
        return [s for s in self.plan if s.stage == stage]
