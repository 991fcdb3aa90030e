"""The student's checkpoints, kept by one object as timm's ``CheckpointSaver`` keeps a run's.

:class:`StudentCheckpoints` resumes a run from ``checkpoint.pth`` (read with ``weights_only``
through :func:`lpld.utils.safe_load.safe_torch_load`; a checkpoint written with other settings is
refused), saves it every ``checkpoint_interval`` epochs and after the last (model, optimizer,
scheduler, EMA, every rank's RNG state, the epoch, the best top-1 so far, the plan of stored
batches and the settings a resume must share, the label plan among them), and keeps
``model_best.pth``: the evaluated model (the EMA when there is one) of the best validation epoch. Every file is written atomically
(:func:`lpld.models.save_checkpoint`), by the main process only.

The epoch a checkpoint records is the number of epochs trained, so a resumed run continues with
the next one -- whatever kind of epoch that is (soft or hard, in the middle of a segment or at its
start): the optimizer, the scheduler and the random streams are the run's, not an epoch's, and
every epoch's data is a function of (seed, epoch).
"""
from __future__ import annotations

import dataclasses
import os
from typing import Any

from ..config import ConfigError
from ..models import save_checkpoint
from ..utils.log import get_logger
from ..utils.safe_load import RESUME_FIX, safe_torch_load

log = get_logger(__name__)

CHECKPOINT = "checkpoint.pth"
BEST = "model_best.pth"
# Settings a resumed run must share with the checkpoint it continues.
RESUME_KEYS = ("dataset", "model", "num_classes", "batch_size", "epochs", "train_epochs", "prune_ratio",
               "prune_metric", "granularity", "replacement", "remap_last_batch", "seed", "sgd",
               "temperature", "label_dir", "train_dir", "gradient_accumulation_steps",
               "temp_scheduler", "temp_step_size", "temp_step_gamma", "temp_min", "temp_stu", "temp_stu_dynamic",
               "prune_mode", "label_plan", "soft_epochs", "hard_epochs", "plan_block", "hard_batch_size",
               "hard_label_smoothing", "hard_cutmix_alpha")
# Resume keys added later, with the value a checkpoint that lacks them was trained with.
RESUME_DEFAULTS = {"temp_scheduler": "none", "temp_step_size": 30, "temp_step_gamma": 0.7, "temp_min": 2.0,
                   "temp_stu": 0.0, "temp_stu_dynamic": 0.0, "prune_mode": "lpld", "label_plan": "soft",
                   "soft_epochs": -1, "hard_epochs": -1, "plan_block": None, "hard_batch_size": 16,
                   "hard_label_smoothing": 0.8, "hard_cutmix_alpha": 1.0}


def resume_state(cfg) -> dict[str, Any]:
    return {k: getattr(cfg, k) for k in RESUME_KEYS}


@dataclasses.dataclass
class Progress:
    """Where a run stands: epochs trained, the best top-1 so far, the last evaluation, and (resumed)
    this rank's random streams to restore once everything is built."""
    epoch: int = 0
    best_top1: float = 0.0
    last_val: dict | None = None
    rng: dict | None = None


class StudentCheckpoints:
    """``checkpoint.pth`` and ``model_best.pth`` of one student run in ``output_dir``."""

    def __init__(self, cfg, output_dir: str) -> None:
        self.cfg = cfg
        self.path = os.path.join(output_dir, CHECKPOINT)
        self.best_path = os.path.join(output_dir, BEST)
        self.interval = cfg.checkpoint_interval

    def resume(self, model, optimizer, scheduler, ema, student, rank: int, is_main: bool) -> Progress:
        """Load the checkpoint into the run's objects (with ``resume`` and a checkpoint present);
        otherwise a fresh start."""
        if not self.cfg.resume:
            return Progress()
        if not os.path.isfile(self.path):
            if is_main:
                log.info(f"--resume: no {self.path} yet; starting from scratch")
            return Progress()
        state = safe_torch_load(self.path, what="--resume: checkpoint", fix=RESUME_FIX)
        saved = state.get("resume_state", {})
        diff = {k: (saved.get(k, RESUME_DEFAULTS.get(k)), v) for k, v in resume_state(self.cfg).items()
                if saved.get(k, RESUME_DEFAULTS.get(k)) != v}
        if diff:
            raise ConfigError(f"--resume: {self.path} was written with other settings "
                              f"(option: checkpoint value, current value) {diff}; use another --output-dir")
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        done = Progress(int(state["epoch"]), float(state["best_top1"]), state.get("last_val"))
        if state.get("lr_scheduler"):
            scheduler.load_state_dict(state["lr_scheduler"])
        else:  # a checkpoint from before the scheduler was saved: replay its epochs
            for _ in range(done.epoch):
                scheduler.step()
        if ema is not None and state.get("ema"):
            ema.restore(state["ema"])
        if state.get("student_temperature"):  # the calibrated value the next epoch uses
            student.load_state_dict(state["student_temperature"])
        rngs = state.get("rng") or []
        done.rng = rngs[rank] if rank < len(rngs) else (rngs[0] if rngs else None)
        return done

    def due(self, epoch: int) -> bool:
        """A checkpoint is written after epoch ``epoch`` (0-based): every ``interval``, and the last."""
        return (epoch + 1) % self.interval == 0 or epoch == self.cfg.train_epochs - 1

    def save(self, model, optimizer, scheduler, ema, student, progress: Progress, rngs: list, plan: dict,
             classes: list[str] | None) -> None:
        save_checkpoint(self.path, model, optimizer=optimizer.state_dict(), lr_scheduler=scheduler.state_dict(),
                        epoch=progress.epoch, best_top1=progress.best_top1, last_val=progress.last_val, rng=rngs,
                        ema=ema.checkpoint() if ema is not None else None, plan=plan,
                        resume_state=resume_state(self.cfg), classes=classes,
                        student_temperature=student.state_dict())

    def save_best(self, evaluated_model, progress: Progress) -> None:
        save_checkpoint(self.best_path, evaluated_model, epoch=progress.epoch, top1=progress.best_top1)
