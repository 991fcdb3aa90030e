"""Submit a whole pipeline plan as jobs with dependencies, through submitit.

Each step of ``pipeline.plan(cfg)`` becomes one job that calls ``pipeline.run_step(cfg, name,
shard)`` -- or, for a sharded step, a job array (recover: class ranges; relabel: batch ranges,
followed by one merge job that calls ``run_step(cfg, name)``). Steps already complete
(``pipeline.step_done``) are not submitted, so resubmitting the same command resumes a table.

* SLURM: every job is submitted at once; a job waits for its predecessors with
  ``--dependency=afterok:<ids>`` (and is cancelled if one fails: ``--kill-on-invalid-dep``).
* local: submitit's LocalExecutor has no dependencies, so this process submits a job once its
  predecessors' jobs have ended successfully, and waits.

Time limits and preemption: SLURM sends USR2 ``signal_delay_s`` before the limit (or on
preemption); submitit then calls :meth:`StepJob.checkpoint` and requeues the job, which runs the
same step again. Every stage resumes from what it has on disk (teacher and student checkpoints
per epoch, recovered classes, committed label batches), so a requeue only loses the work since
that last save.
"""
from __future__ import annotations

import argparse
import dataclasses
import importlib
import os
import sys
import time
from typing import Any, Sequence

import submitit
import torch
from submitit.slurm.slurm import _make_sbatch_string

from ..utils.errors import InputValueError
from ..utils.log import get_logger
from .resources import Resources, local_parameters, resources_for, slurm_parameters

log = get_logger(__name__)


# ---- the job ------------------------------------------------------------------------------------

class StepJob(submitit.helpers.Checkpointable):
    """One process of one job: ``pipeline.run_step(cfg, name, shard)``.

    ``checkpoint`` (inherited) resubmits the same call: on requeue the step runs again and resumes
    from its own checkpoints. ``distributed``: export RANK / WORLD_SIZE / LOCAL_RANK / MASTER_ADDR /
    MASTER_PORT from the job's environment first, as torchrun would (validate's env:// init reads them)."""

    def __init__(self, pipeline: Any, cfg: argparse.Namespace, name: str, shard: tuple[int, int] | None = None,
                 distributed: bool = False) -> None:
        self.pipeline, self.cfg, self.name, self.shard, self.distributed = pipeline, cfg, name, shard, distributed

    def __call__(self) -> str:
        if self.distributed:
            export_distributed()
        where = "" if self.shard is None else f" shard {self.shard[0]} of {self.shard[1]}"
        log.info(f"[job] {self.name}{where}")
        load_pipeline(self.pipeline).run_step(self.cfg, self.name, self.shard)
        return self.name


def export_distributed() -> dict[str, str]:
    """Set the torch.distributed env:// variables from the submitit job environment (SLURM or local).

    Every process keeps all of its node's GPUs visible; validate picks ``cuda:LOCAL_RANK``."""
    env = submitit.helpers.TorchDistributedEnvironment().export(set_cuda_visible_devices=False, overwrite=True)
    return {"RANK": str(env.rank), "WORLD_SIZE": str(env.world_size), "LOCAL_RANK": str(env.local_rank),
            "MASTER_ADDR": env.master_addr, "MASTER_PORT": str(env.master_port)}


def load_pipeline(pipeline: Any) -> Any:
    """A module name (``"lpld.pipeline"``) or an object with plan / step_done / run_step."""
    return importlib.import_module(pipeline) if isinstance(pipeline, str) else pipeline


# ---- the job graph ------------------------------------------------------------------------------

@dataclasses.dataclass
class Unit:
    """What one submission makes: one job, or a job array over ``shards``."""
    key: str                      # the step name; "<step>#shards" for the shard array of a merged step
    step: str
    kind: str
    after: list[str]              # unit keys
    shards: list[tuple[int, int]] | None = None
    jobs: list[Any] = dataclasses.field(default_factory=list)


def shard_count(kind: str, lcfg: argparse.Namespace) -> int:
    return {"recover": lcfg.recover_shards, "relabel": lcfg.relabel_shards}.get(kind, 1)


def expand(plan: Sequence[Any], done: set[str], lcfg: argparse.Namespace) -> list[Unit]:
    """Units of the steps not done, in plan order; dependencies on done steps are dropped."""
    units = []
    for step in plan:
        if step.name in done:
            continue
        after = [a for a in step.after if a not in done]
        n = shard_count(step.kind, lcfg)
        shards = [(i, n) for i in range(n)] if n > 1 else None
        if shards and step.kind == "relabel":  # shard stores, then a merge into the one store
            units.append(Unit(step.name + "#shards", step.name, step.kind, after, shards))
            units.append(Unit(step.name, step.name, "merge", [step.name + "#shards"]))  # CPU only
        else:
            units.append(Unit(step.name, step.name, step.kind, after, shards))
    return units


class Launcher:
    def __init__(self, cfg: argparse.Namespace, lcfg: argparse.Namespace, pipeline: Any = "lpld.pipeline",
                 folder: str | None = None) -> None:
        """``folder``: where submitit keeps scripts and logs unless ``lcfg.folder`` says (default:
        ``<cfg.output_dir>/launch/<executor>``)."""
        self.cfg, self.lcfg, self.pipeline = cfg, lcfg, pipeline
        out = os.path.abspath(getattr(cfg, "output_dir", None) or ".")
        self.folder = lcfg.folder or os.path.join(folder or os.path.join(out, "launch"), lcfg.executor)
        self._next_gpu = 0
        if lcfg.executor == "local":
            self.gpus = ([int(g) for g in lcfg.local_gpus] if lcfg.local_gpus is not None else _visible_gpus())

    # -- planning ------------------------------------------------------------------------------
    def units(self) -> list[Unit]:
        pipe = load_pipeline(self.pipeline)
        plan = pipe.plan(self.cfg)
        done = {s.name for s in plan if pipe.step_done(self.cfg, s.name)}
        for name in sorted(done):
            log.info(f"[skip] {name}: already complete")
        return expand(plan, done, self.lcfg)

    def resources(self, unit: Unit) -> Resources:
        return resources_for(unit.step, unit.kind, self.lcfg)

    def calls(self, unit: Unit) -> list[StepJob]:
        res = self.resources(unit)
        if unit.shards:
            return [StepJob(self.pipeline, self.cfg, unit.step, s) for s in unit.shards]
        return [StepJob(self.pipeline, self.cfg, unit.step, None, distributed=res.distributed)]

    # -- executors -----------------------------------------------------------------------------
    def job_name(self, unit: Unit) -> str:
        return "lpld:" + unit.key

    def slurm_executor(self, unit: Unit, dependency: list[str] | None) -> Any:
        ex = submitit.SlurmExecutor(folder=os.path.join(self.folder, "%j"), max_num_timeout=self.lcfg.max_requeue)
        ex.update_parameters(**slurm_parameters(self.resources(unit), self.lcfg, self.job_name(unit), dependency))
        return ex

    def local_executor(self, unit: Unit, gpus: list[int]) -> Any:
        ex = submitit.LocalExecutor(folder=self.folder, max_num_timeout=self.lcfg.max_requeue)
        ex.update_parameters(**local_parameters(self.resources(unit), self.lcfg, gpus))
        return ex

    def _local_gpus(self, unit: Unit) -> list[int]:
        res = self.resources(unit)
        want = res.nodes * res.tasks_per_node if res.gpus_per_node else 0
        if not want or not self.gpus:
            return []
        if want > len(self.gpus):
            raise InputValueError(f"step {unit.step} asks for {want} GPUs (nodes x gpus_per_node) but the local "
                                  f"executor has {len(self.gpus)} ({self.gpus}); lower --gpus-per-node / --nodes")
        picked = [self.gpus[(self._next_gpu + k) % len(self.gpus)] for k in range(want)]
        self._next_gpu = (self._next_gpu + want) % len(self.gpus)
        return picked

    # -- submission ----------------------------------------------------------------------------
    def submit(self, unit: Unit, dependency: list[str] | None = None) -> list[Any]:
        calls = self.calls(unit)
        if self.lcfg.executor == "slurm":
            ex = self.slurm_executor(unit, dependency)
            if len(calls) > 1:
                with ex.batch():  # one job array
                    jobs = [ex.submit(c) for c in calls]
            else:
                jobs = [ex.submit(calls[0])]
        else:
            jobs = [self.local_executor(unit, self._local_gpus(unit)).submit(c) for c in calls]
        unit.jobs = jobs
        ids = ", ".join(j.job_id for j in jobs)
        log.info(f"[submit] {unit.key}: job {ids}" + (f" after {dependency}" if dependency else ""))
        return jobs

    def run(self, wait: bool | None = None) -> dict[str, list[Any]]:
        """Submit every unit not done; with ``wait`` (default: local yes, slurm no) wait for all."""
        units = self.units()
        by_key = {u.key: u for u in units}
        if self.lcfg.executor == "slurm":
            for unit in units:  # topological order: predecessors already have ids
                # an array's id stands for all of its tasks ("123_4" is task 4 of array 123)
                deps = list(dict.fromkeys(j.job_id.split("_")[0] for a in unit.after for j in by_key[a].jobs))
                self.submit(unit, deps or None)
            if wait if wait is not None else bool(self.lcfg.wait):
                self._wait_all(units)
        else:
            self._run_local(units, by_key)
        return {u.key: u.jobs for u in units}

    def _run_local(self, units: list[Unit], by_key: dict[str, Unit]) -> None:
        pending, finished = list(units), set()
        try:
            while len(finished) < len(units):
                for unit in units:
                    if unit.jobs and unit.key not in finished and self._ended(unit):
                        self._check(unit)
                        finished.add(unit.key)
                for unit in list(pending):
                    if all(a in finished for a in unit.after):
                        self.submit(unit)
                        pending.remove(unit)
                if pending and not any(u.jobs and u.key not in finished for u in units):
                    raise RuntimeError(f"steps {[u.key for u in pending]} wait for steps that never ran")
                time.sleep(self.lcfg.poll_s)
        except BaseException:
            for unit in units:
                for job in unit.jobs:
                    if not job.done():
                        job.cancel(check=False)
            raise

    @staticmethod
    def _ended(unit: Unit) -> bool:
        return all(j.done() for j in unit.jobs)

    def _check(self, unit: Unit) -> None:
        for job in unit.jobs:
            try:
                job.result()
            except Exception as err:  # submitit's FailedJobState carries the job's traceback
                raise JobFailedError(f"step {unit.key} failed (job {job.job_id}; log {job.paths.stderr}):\n"
                                     f"{err}") from None
        log.info(f"[done] {unit.key}")

    def _wait_all(self, units: list[Unit]) -> None:
        for unit in units:
            for job in unit.jobs:
                job.wait()
            self._check(unit)

    # -- dry run -------------------------------------------------------------------------------
    def describe(self) -> str:
        """Without submitting: each unit's resources and, for SLURM, the sbatch script it would get."""
        lines = []
        for unit in self.units():
            res = self.resources(unit)
            arr = f", array of {len(unit.shards)}" if unit.shards else ""
            lines.append(f"# {unit.key} ({unit.kind}{arr}): {res.nodes} node(s) x {res.tasks_per_node} task(s), "
                         f"{res.gpus_per_node} GPU(s)/node, {res.time_min} min; after {unit.after or '-'}")
            if self.lcfg.executor == "slurm":
                lines.append(sbatch_script(res, self.lcfg, self.job_name(unit), self.folder,
                                           [f"<{a}>" for a in unit.after] or None,
                                           len(unit.shards) if unit.shards else None))
        return "\n".join(lines)


def sbatch_script(res: Resources, lcfg: argparse.Namespace, job_name: str, folder: str,
                  dependency: list[str] | None = None, array: int | None = None) -> str:
    """The sbatch file submitit writes for a job with these resources (``array``: task count)."""
    params = slurm_parameters(res, lcfg, job_name, dependency)
    if array:
        params["map_count"] = array
    command = f"{sys.executable} -u -m submitit.core._submit {os.path.join(folder, '%j')}"
    return _make_sbatch_string(command=command, folder=os.path.join(folder, "%j"), **params)


class JobFailedError(RuntimeError):
    pass


def _visible_gpus() -> list[int]:
    return list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
