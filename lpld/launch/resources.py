"""What each job asks for, and how that becomes submitit parameters (SLURM or local processes).

Options come from the command line or a ``launch:`` section of a YAML config (see
:data:`LAUNCH_SCHEMA`). Students (``validate/...`` steps) are DDP jobs of ``nodes`` x
``gpus_per_node`` processes, one per GPU; every other GPU step (teacher training, a recovery shard,
a relabel shard, class statistics) is one process on one GPU; dataset generation and the report
ask for no GPU.
"""
from __future__ import annotations

import argparse
import dataclasses
from typing import Any

from ..config import Option

LAUNCH_SCHEMA = {
    "executor": Option("local", str, "slurm: sbatch jobs with dependencies (submitit's SlurmExecutor); local: "
                                     "the same jobs as processes on this machine (submitit's LocalExecutor)",
                       choices=("local", "slurm")),
    "folder": Option(None, str, "job scripts, logs and pickles (default: <output_dir>/launch/<executor>)"),
    "partition": Option(None, str, "SLURM partition (sbatch --partition)"),
    "account": Option(None, str, "SLURM account (sbatch --account)"),
    "qos": Option(None, str, "SLURM quality of service (sbatch --qos)"),
    "constraint": Option(None, str, "SLURM node features (sbatch --constraint)"),
    "time_min": Option(24 * 60, int, "time limit of every job in minutes (sbatch --time); a job that reaches "
                                     "it requeues itself and resumes", min=1),
    "nodes": Option(1, int, "nodes of each student (DDP) job", min=1),
    "gpus_per_node": Option(1, int, "GPUs per node of each student job; one DDP process per GPU. Every other "
                                    "GPU job uses one GPU", min=1),
    "cpus_per_task": Option(8, int, "CPU cores per process (data-loading workers live there)", min=1),
    "mem_gb": Option(None, int, "memory per node in GB (sbatch --mem; default: the partition's)", min=1),
    "recover_shards": Option(1, int, "recover as a job array of this many class ranges", min=1),
    "relabel_shards": Option(1, int, "relabel as this many batch-range jobs, then a merge job", min=1),
    "array_parallelism": Option(256, int, "at most this many tasks of one job array run at once", min=1),
    "signal_delay_s": Option(120, int, "the warning signal (USR2) comes this long before the time limit; the "
                                       "job then requeues itself", min=0),
    "max_requeue": Option(20, int, "how many times a job may requeue itself after its time limit", min=0),
    "setup": Option([], list, "shell lines run before each SLURM job (module load ..., source venv/bin/activate)"),
    "local_gpus": Option(None, list, "local executor: GPU ids the jobs may use (default: every visible GPU); "
                                     "single-GPU jobs take them in turn", item=int, min=0),
    "wait": Option(None, bool, "wait until every job ends (default: yes for local, no for slurm)"),
    "poll_s": Option(5.0, float, "local executor: seconds between checks of the running jobs", min=0, min_open=True),
}

# A step is known to the launcher by its name and kind alone (any pipeline object with plan /
# step_done / run_step can be launched); a step's name starts with its stage's folder
# (lpld.pipeline.plan names them so). Students (validate/...) train with DistributedDataParallel
# when RANK/WORLD_SIZE are set (lpld.validate.distributed); teacher training runs in one process.
DDP_STEP_PREFIXES = ("validate/",)
# Steps that never touch a model (dataset generation, the report) run without a GPU; every other
# step -- class statistics and diversity are a teacher pass over images -- gets one.
CPU_STEP_PREFIXES = ("data/", "report")


@dataclasses.dataclass(frozen=True)
class Resources:
    nodes: int = 1
    tasks_per_node: int = 1
    gpus_per_node: int = 0
    cpus_per_task: int = 1
    mem_gb: int | None = None
    time_min: int = 60

    @property
    def distributed(self) -> bool:
        return self.nodes * self.tasks_per_node > 1


def is_ddp_step(name: str) -> bool:
    return name.startswith(DDP_STEP_PREFIXES)


def resources_for(name: str, kind: str, lcfg: argparse.Namespace) -> Resources:
    common = {"cpus_per_task": lcfg.cpus_per_task, "mem_gb": lcfg.mem_gb, "time_min": lcfg.time_min}
    if kind == "train" and is_ddp_step(name):
        return Resources(nodes=lcfg.nodes, tasks_per_node=lcfg.gpus_per_node, gpus_per_node=lcfg.gpus_per_node,
                         **common)
    if kind != "merge" and not name.startswith(CPU_STEP_PREFIXES):
        return Resources(gpus_per_node=1, **common)
    return Resources(**{**common, "cpus_per_task": min(lcfg.cpus_per_task, 4)})


def slurm_parameters(res: Resources, lcfg: argparse.Namespace, job_name: str,
                     dependency: list[str] | None = None) -> dict[str, Any]:
    """sbatch settings, in submitit's SlurmExecutor names."""
    params: dict[str, Any] = {
        "job_name": job_name, "nodes": res.nodes, "ntasks_per_node": res.tasks_per_node,
        "cpus_per_task": res.cpus_per_task, "time": res.time_min, "signal_delay_s": lcfg.signal_delay_s,
        "array_parallelism": lcfg.array_parallelism, "setup": list(lcfg.setup or []),
        # a job whose predecessor failed is cancelled instead of pending forever
        "additional_parameters": {"kill-on-invalid-dep": "yes"},
    }
    if res.gpus_per_node:
        params["gpus_per_node"] = res.gpus_per_node
    if res.mem_gb:
        params["mem"] = f"{res.mem_gb}GB"
    for key in ("partition", "account", "qos", "constraint"):
        if getattr(lcfg, key):
            params[key] = getattr(lcfg, key)
    if dependency:
        params["dependency"] = "afterok:" + ":".join(dependency)
    return params


def local_parameters(res: Resources, lcfg: argparse.Namespace, gpus: list[int]) -> dict[str, Any]:
    """LocalExecutor settings: one node; ``gpus`` are the ids this job sees."""
    return {"timeout_min": res.time_min, "tasks_per_node": res.nodes * res.tasks_per_node,
            "gpus_per_node": len(gpus), "visible_gpus": tuple(gpus), "signal_delay_s": lcfg.signal_delay_s}
