"""Distillation temperatures of LPQLD: schedules over epochs ("DKR") and the student's calibration ("CA").

From the authors' ``relabel_and_validate/train_FKD_LPQLD.py``
(he-y/soft-label-pruning-quantization-for-dataset-distillation):

* schedules, lines 514-536, with ``T0 = --temperature`` and ``E = train_epochs``:
  ``step``     ``T0 * gamma ** (e // step_size)``, never below 2 (``temperature if temperature > 2
  else 2``: a hard-coded 2, not ``--temp_min``, so a ``T0`` under 2 is raised to 2);
  ``cosine``   ``t_min + (T0 - t_min) * (1 + cos(pi * e / E)) / 2``;
  ``step_reverse``  ``T0 * gamma ** ((E - e - 1) // step_size)`` with ``e`` clamped to ``E - 1``
  (no floor: it starts low and ends at ``T0``);
  ``cosine_reverse``  ``t_min + (T0 - t_min) * (1 - cos(pi * e / E)) / 2``;
  none: ``T0``.
  Their loop evaluates these at ``current_epoch = abs_step // batches_per_epoch + 1`` (line 597),
  i.e. 1-based: the first epoch sees ``e = 1`` and the last ``e = E`` (so ``step`` decays first
  after 29 epochs, and ``cosine`` reaches ``t_min`` in the last epoch). :meth:`TemperatureSchedule.at`
  takes our 0-based epoch index and evaluates their formula at ``epoch + 1``.
* student temperature, lines 774-780: ``--temp_stu_dynamic`` if set (> 0), else ``--temp_stu``
  if set, else the teacher's current temperature.
* calibration, lines 813-825: after every epoch, on the last micro-batch's student logits and
  target, ``KLDivLoss(batchmean)(log_softmax(out / t), target)`` over
  ``t in np.linspace(0.01, 1, 100)``; the minimising ``t`` becomes ``--temp_stu_dynamic``, the
  student temperature of the next epoch. Their README and help text call this value "a calibrated
  ratio of the teacher temperature", but the code uses it as the absolute student temperature
  (line 776); we follow the code.

Defaults reproduce ``scripts/reproduce/lpqld_in1k.sh`` (lines 86-89, every ImageNet-1K row):
``temperature 20, temp_scheduler step, temp_step_size 30, temp_step_gamma 0.7`` and
``--temp_stu_dynamic 1.0`` (calibration on, starting at 1.0), with ``--prune_ratio 0.9``.
Their ``temp_min 2`` there is passed only with ``cosine`` (lines 45-46); their argparse defaults
(lines 101, 158-174: step gamma 0.5, t_min 1.0, no schedule, no calibration) are not the paper's.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

SCHEDULES = ("none", "step", "cosine", "step_reverse", "cosine_reverse")
STEP_FLOOR = 2.0  # train_FKD_LPQLD.py line 518: ``return temperature if temperature > 2 else 2``
STUDENT_MODES = ("teacher", "fixed", "calibrated")


def calibration_grid() -> np.ndarray:
    """The authors' grid of student temperatures, ``np.linspace(0.01, 1, 100)`` (line 816)."""
    return np.linspace(0.01, 1, 100)


def normalize_schedule(kind) -> str:
    """``None`` / ``"None"`` -> ``"none"``; anything not in :data:`SCHEDULES` is a one-line error."""
    text = "none" if kind is None else str(kind).strip().lower()
    if text in ("", "null", "false"):
        text = "none"
    if text not in SCHEDULES:
        raise ValueError(f"temp_scheduler must be one of {list(SCHEDULES)}; got {kind!r}")
    return text


@dataclasses.dataclass(frozen=True)
class TemperatureSchedule:
    """The teacher-side temperature of every training epoch (the authors' ``temp_scheduler``)."""

    kind: str = "step"          # lpqld_in1k.sh: temp_scheduler "step"
    base: float = 20.0          # T0: lpqld_in1k.sh temperature 20
    train_epochs: int = 300     # E: their args.train_epochs (= epochs 300 of the in1k config)
    step_size: int = 30         # lpqld_in1k.sh temp_step_size 30
    gamma: float = 0.7          # lpqld_in1k.sh temp_step_gamma 0.7
    t_min: float = 2.0          # lpqld_in1k.sh temp_min 2 (cosine variants only)
    floor: float = STEP_FLOOR   # the step schedule's hard-coded lower bound

    def __post_init__(self) -> None:
        object.__setattr__(self, "kind", normalize_schedule(self.kind))
        if not self.base > 0:
            raise ValueError(f"temperature must be positive; got {self.base}")
        if int(self.train_epochs) < 1:
            raise ValueError(f"train_epochs must be >= 1 for a temperature schedule; got {self.train_epochs}")
        if self.kind in ("step", "step_reverse"):
            if int(self.step_size) < 1:
                raise ValueError(f"temp_step_size must be >= 1; got {self.step_size}")
            if not self.gamma > 0:
                raise ValueError(f"temp_step_gamma must be positive; got {self.gamma}")
        if self.kind in ("cosine", "cosine_reverse") and not self.t_min > 0:
            raise ValueError(f"temp_min must be positive; got {self.t_min}")

    def at(self, epoch: int) -> float:
        """Temperature of the 0-based training epoch ``epoch`` (their formula at ``epoch + 1``)."""
        e = int(epoch) + 1
        big_e = int(self.train_epochs)
        if self.kind == "step":
            t = self.base * self.gamma ** (e // self.step_size)
            return t if t > self.floor else self.floor
        if self.kind == "cosine":
            return self.t_min + 0.5 * (self.base - self.t_min) * (1 + math.cos(math.pi * e / big_e))
        if self.kind == "step_reverse":
            e = min(e, big_e - 1)
            return self.base * self.gamma ** ((big_e - e - 1) // self.step_size)
        if self.kind == "cosine_reverse":
            return self.t_min + 0.5 * (self.base - self.t_min) * (1 - math.cos(math.pi * e / big_e))
        return float(self.base)

    def describe(self) -> str:
        if self.kind == "none":
            return f"T={self.base:g}"
        if self.kind.startswith("step"):
            return f"T={self.base:g} {self.kind} (x{self.gamma:g} every {self.step_size} epochs)"
        return f"T={self.base:g} {self.kind} (to {self.t_min:g} over {self.train_epochs} epochs)"


@torch.no_grad()
def calibrate_student_temperature(student_logits: torch.Tensor, target: torch.Tensor,
                                  grid: Sequence[float] | None = None) -> float:
    """The ``t`` of ``grid`` minimising ``KL(target || softmax(student_logits / t))`` (batchmean).

    ``target``: the probability target the loss used ([B, C], zero outside a top-k support). The
    first minimum wins on ties, as ``np.argmin`` in theirs."""
    grid = calibration_grid() if grid is None else np.asarray(grid, dtype=np.float64)
    if grid.ndim != 1 or grid.size == 0 or not bool(np.all(grid > 0)):
        raise ValueError("the calibration grid must be a non-empty list of positive temperatures")
    if student_logits.shape != target.shape:
        raise ValueError(f"student logits {tuple(student_logits.shape)} and target {tuple(target.shape)} differ")
    logits, target = student_logits.detach().float(), target.detach().float()
    losses = [float(F.kl_div(F.log_softmax(logits / float(t), dim=1), target, reduction="batchmean"))
              for t in grid]
    return float(grid[int(np.argmin(losses))])


class StudentTemperature:
    """Which temperature the student's log-softmax uses, and its per-epoch calibration.

    ``teacher``: the teacher's current temperature (LPLD, and theirs without ``--temp_stu*``);
    ``fixed``: ``value`` throughout (``--temp_stu``); ``calibrated``: ``value`` in the first epoch
    (``--temp_stu_dynamic``, 1.0 in lpqld_in1k.sh), then after every epoch the grid minimum of
    :func:`calibrate_student_temperature` for the next one. The state is checkpointed so that a
    resumed run continues with the temperature the uninterrupted run would use."""

    def __init__(self, mode: str = "calibrated", value: float = 1.0, grid: Sequence[float] | None = None) -> None:
        if mode not in STUDENT_MODES:
            raise ValueError(f"student temperature mode must be one of {list(STUDENT_MODES)}; got {mode!r}")
        if mode != "teacher" and not value > 0:
            raise ValueError(f"the {mode} student temperature must be positive; got {value}")
        self.mode, self.value = mode, float(value)
        self.grid = calibration_grid() if grid is None else np.asarray(grid, dtype=np.float64)
        self.history: list[float] = []

    def current(self, teacher_temperature: float) -> float:
        return float(teacher_temperature) if self.mode == "teacher" else self.value

    def end_epoch(self, student_logits: torch.Tensor, target: torch.Tensor) -> float:
        """Calibrate on the epoch's last micro-batch (``calibrated`` only); returns the next value."""
        if self.mode == "calibrated":
            self.value = calibrate_student_temperature(student_logits, target, self.grid)
            self.history.append(self.value)
        return self.value

    def state_dict(self) -> dict:
        return {"mode": self.mode, "value": self.value, "history": list(self.history)}

    def load_state_dict(self, state: dict) -> None:
        if state.get("mode") != self.mode:
            raise ValueError(f"checkpoint's student temperature mode {state.get('mode')!r} differs from "
                             f"{self.mode!r}; resume with the same settings")
        self.value = float(state["value"])
        self.history = [float(v) for v in state.get("history", [])]
