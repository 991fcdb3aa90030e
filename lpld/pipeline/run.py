"""Running the plan: :func:`run_pipeline` (every step not done, in order), :func:`run_step` (one
step, as a cluster job runs it), and :func:`run_stage` (one recover / relabel config: whole, one
shard of it, or the merge of its shards), the one dispatch both the pipeline and ``lpld launch
recover|relabel`` use."""
from __future__ import annotations

import argparse
import json
import os
import time
from typing import Any, Callable

import torch

from ..labels.common import is_our_label_store
from ..recover import run_recovery
from ..recover.shards import run_recovery_shard
from ..relabel import run_relabel
from ..relabel.generate import run_relabel_shard
from ..relabel.shards import has_shards, merge_shards
from ..utils.errors import InputValueError
from ..utils.io import atomic_json_dump
from ..utils.log import get_logger
from ..utils.owner import claim_dir, is_ours
from . import records
from .layout import image_dir, label_dir, run_dir
from .plan import Job, Step
from .schema import resolve_dataset
from .stages import step_settings

log = get_logger(__name__)
# the stages a step of kind recover / relabel runs, whole or as one shard
STAGE_RUNS: dict[str, Callable] = {"recover": run_recovery, "relabel": run_relabel}
SHARD_RUNS: dict[str, Callable] = {"recover": run_recovery_shard, "relabel": run_relabel_shard}


# ---- one recover / relabel config -------------------------------------------------------------------
def run_shard(kind: str, settings: argparse.Namespace, shard: tuple[int, int], **stage_kwargs: Any) -> Any:
    """Run shard ``shard = (index, count)`` of a recover (a class range) or relabel (a batch range)
    config, the config the stage would run unsharded. ``stage_kwargs`` go to the stage function
    (relabel: ``teacher``)."""
    if kind not in SHARD_RUNS:
        raise InputValueError(f"a step of kind {kind!r} cannot be sharded; only recover (classes) and relabel "
                              f"(batches) are")
    return SHARD_RUNS[kind](settings, shard, **stage_kwargs)


def run_stage(kind: str, settings: argparse.Namespace, shard: tuple[int, int] | None = None,
              fn: Callable | None = None) -> Any:
    """A recover or relabel config: one shard of it; unsharded, a relabel config whose shards are on
    disk is merged (:func:`lpld.relabel.shards.merge_shards`); otherwise the stage runs whole
    (``fn``, default the stage's own function)."""
    if shard is not None:
        return run_shard(kind, settings, shard)
    if kind == "relabel" and has_shards(settings):
        return merge_shards(settings)
    return (fn or STAGE_RUNS[kind])(settings)


# ---- steps --------------------------------------------------------------------------------------------
def step_done(cfg: argparse.Namespace, name: str) -> bool:
    """Complete and current (:mod:`lpld.pipeline.records`). A step that changed since it ran raises
    :class:`~lpld.pipeline.records.StaleStepError`, or, with ``recompute``, is not done."""
    job = Job(cfg)
    st = records.status(job, job[name])
    if st.state == "changed" and not getattr(cfg, "recompute", False):
        raise records.stale_error(name, st)
    return st.state in records.CURRENT


def run_step(cfg: argparse.Namespace, name: str, shard: tuple[int, int] | None = None, job: Job | None = None) -> Any:
    """Run one step. ``shard=(index, count)`` runs one share of a recover / relabel step
    (:func:`run_stage`); unsharded, a relabel step whose shards are on disk merges them.

    A step that is complete and current is not run again. One that changed since it ran raises
    :class:`~lpld.pipeline.records.StaleStepError`; with ``recompute`` (unsharded: shards never
    clear what another shard may be writing) its output -- only ours -- is cleared and it runs
    again. Its record is written before it runs and once its output is complete."""
    job = Job(cfg) if job is None else job
    step = job[name]
    use_threads(cfg)
    claim_run_dir(cfg)
    if step.stage != "report":
        st = records.status(job, step)
        if st.waiting:
            raise InputValueError(f"step {name} runs {st.detail}: run that step first")
        if st.state in records.CURRENT:
            log.info(f"[skip] {name}: already complete")
            return None
        if st.state == "changed":
            if not getattr(cfg, "recompute", False) or shard is not None:
                raise records.stale_error(name, st, shard=shard is not None)
            records.clear(job, step)
        records.write_record(job, step, "started")
    result = _execute(job, step, shard)
    if step.stage != "report" and records.outputs_complete(job, step):
        done = records.write_record(job, step, "done")
        job.ran.add(name)
        job.status[name] = records.Status("done", output=done["output"])
    return result


def _execute(job: Job, step: Step, shard: tuple[int, int] | None) -> Any:
    fn, settings = step_settings(job, step)
    if step.stage == "validate":
        _write_row_info(job, step, settings)
    if shard is not None and step.kind not in ("recover", "relabel"):
        raise ValueError(f"step {step.name} ({step.kind}) cannot be sharded; only recover and relabel steps can")
    if step.kind in ("recover", "relabel"):
        return run_stage(step.kind, settings, shard, fn)
    return fn(settings)


def _write_row_info(job: Job, step: Step, settings) -> None:
    """Beside each student: what row it belongs to, so ``lpld report`` groups without guessing, and
    the settings it trains with, so the report never averages students trained differently."""
    cfg, row = job.cfg, step.row
    info = {"table": cfg.table, "dataset": cfg.dataset, "method": row.method, "ipc": row.ipc,
            "label_topk": row.label_topk, "prune_ratio": row.prune_ratio, "compression": row.compression,
            "student": settings.model, "prune_metric": settings.prune_metric, "granularity": settings.granularity,
            "label_plan": row.label_plan, "seed": step.seed, "label_mode": cfg.label_mode,
            "images": image_dir(cfg, row.method, row.ipc),
            "labels": label_dir(cfg, row), "settings": records.settings_of(job, step)}
    claim_dir(settings.output_dir, "validate", "student output directory")
    atomic_json_dump(info, os.path.join(settings.output_dir, "row.json"))


def use_threads(cfg) -> None:
    """``threads``: torch's CPU thread count for the steps run in this process (every step, of the
    pipeline or a cluster job, runs through :func:`run_step`)."""
    threads = getattr(cfg, "threads", None)
    if threads:
        if torch.get_num_threads() != threads:
            log.info(f"torch CPU threads: {threads} (threads; torch's default here: {torch.get_num_threads()})")
        torch.set_num_threads(threads)


def claim_run_dir(cfg) -> None:
    """The output folder is new, empty or ours -- also one made before owner markers, recognised
    by an image set or label store of ours in it."""
    def made_here(out: str) -> bool:
        sets = [(os.path.join(out, sub), test) for sub, test in
                (("images", lambda p: is_ours(p, ["images"])), ("labels", is_our_label_store))]
        return any(test(os.path.join(d, e)) for d, test in sets if os.path.isdir(d) for e in os.listdir(d))
    claim_dir(run_dir(cfg), "pipeline", "pipeline output folder", owned=made_here)


# ---- the whole job ------------------------------------------------------------------------------------
def run_pipeline(cfg: argparse.Namespace) -> dict[str, Any]:
    """Run every step not done yet, in plan order; returns the report. A step that changed since
    it ran stops the job before anything runs (one line: step, key, old -> new), unless
    ``recompute``."""
    resolve_dataset(cfg)
    if cfg.teacher and not os.path.isfile(cfg.teacher):
        raise InputValueError(f"teacher {cfg.teacher} not found: download it (bash download.sh --what teachers), "
                              f"or --teacher null to train one (squeeze)")
    job = Job(cfg)
    checked = [(step.name, records.status(job, step)) for step in job]
    if cfg.dry_run:
        for name, st in checked:
            log.info(st.line(name))
        return {}
    changed = [(name, st) for name, st in checked if st.state == "changed"]
    if changed and not cfg.recompute:
        raise records.stale_error(*changed[0], more=len(changed) - 1)
    claim_run_dir(cfg)
    job = Job(cfg)  # checked again step by step, as the steps before each one run
    for step in job:
        st = records.status(job, step)
        if st.state in records.CURRENT:
            log.info(f"[skip] {step.name}: already complete")
            continue
        log.info(f"[{'redo' if st.state == 'changed' else 'run '}] {step.name}"
                 + (f": {st.detail}" if st.state == "changed" else ""))
        t0 = time.time()
        run_step(cfg, step.name, job=job)
        log.info(f"[done] {step.name} in {time.time() - t0:.1f}s")
    with open(os.path.join(run_dir(cfg), "results.json")) as f:
        return json.load(f)

