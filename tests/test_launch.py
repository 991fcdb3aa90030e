"""Cluster launcher: jobs with dependencies (SLURM script and wiring, local processes), sharded
recover / relabel identical to single-process runs, requeue after the warning signal, DDP environment."""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import signal
import sys
import time

import cloudpickle
import pytest
import torch

from lpld.config import resolve
from lpld.launch.launcher import Launcher, export_distributed, sbatch_script
from lpld.launch.resources import LAUNCH_SCHEMA, resources_for
from lpld.models import build_model, save_checkpoint
from lpld.pipeline import run_shard
from lpld.recover import RECOVER_SCHEMA, run_recovery
from lpld.recover.io import class_complete
from lpld.recover.shards import recover_range
from lpld.relabel import RELABEL_SCHEMA, run_relabel
from lpld.relabel.shards import has_shards, merge_shards
from lpld.utils.errors import InputValueError
from lpld.utils.ranges import split_range

# the fake pipelines below run in the jobs' own processes: pickle this module's classes by value
cloudpickle.register_pickle_by_value(sys.modules[__name__])


def launch_cfg(**over) -> argparse.Namespace:
    return resolve(LAUNCH_SCHEMA, [("test", {"poll_s": 0.2, "local_gpus": [], **over})])


def files(path: str) -> dict[str, bytes]:
    out = {}
    for root, _, names in os.walk(path):
        for name in names:
            full = os.path.join(root, name)
            if not name.startswith((".", "recover_log")):  # logs hold timings
                out[os.path.relpath(full, path)] = open(full, "rb").read()
    return out


@pytest.fixture(scope="module")
def inputs(demo_root, tmp_path_factory):
    """A random-init class-BN teacher on disk (recover); relabel uses SlowTeacher (a few-ms CNN)."""
    tmp = tmp_path_factory.mktemp("launch")
    torch.manual_seed(0)
    class_bn = str(tmp / "class_bn.pth")
    save_checkpoint(class_bn, build_model("resnet18", 4, class_aware=True))
    return {"class_bn": class_bn, "train_dir": os.path.join(demo_root, "train")}


def recover_cfg(inputs, out: str) -> argparse.Namespace:
    return resolve(RECOVER_SCHEMA, [("test", dict(
        teacher=inputs["class_bn"], dataset="demo", image_size=16, ipc=2, iterations=2, lr=0.1, output_dir=out,
        exp_name="exp", device="cpu", progress=False, groups_per_step=1))])


def relabel_cfg(train_dir: str, teacher: str | None, out: str, **over) -> argparse.Namespace:
    values = {"dataset": "demo", "train_dir": train_dir, "teacher_ckpt": teacher, "tiny_stem": True,
              "batch_size": 8, "epochs": 1, "input_size": 16, "mix_type": "cutmix", "output_dir": out,
              "workers": 0, "progress": False, "device": "cpu", **over}
    return resolve(RELABEL_SCHEMA, [("test", values)])


class SlowTeacher(torch.nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(1)
        self.net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(),
                                       torch.nn.AdaptiveAvgPool2d(2), torch.nn.Flatten(), torch.nn.Linear(32, 4))
        self.delay = 0.0

    def forward(self, x):
        time.sleep(self.delay)
        return self.net(x)


# ---- shard arithmetic -----------------------------------------------------------------------------

def test_split_range_tiles_and_aligns():
    parts = [split_range(0, 10, i, 3) for i in range(3)]
    assert parts == [(0, 3), (3, 6), (6, 10)]
    assert [split_range(0, 1000, i, 3, align=100) for i in range(3)] == [(0, 300), (300, 700), (700, 1000)]
    with pytest.raises(InputValueError, match="shard 3 of 3"):
        split_range(0, 10, 3, 3)


def test_recover_ranges_fall_on_unit_boundaries(inputs, tmp_path):
    cfg = recover_cfg(inputs, str(tmp_path))  # 4 classes read from the teacher
    assert [recover_range(cfg, i, 2) for i in range(2)] == [(0, 2), (2, 4)]
    cfg.groups_per_step, cfg.class_start = 4, 1
    assert [recover_range(cfg, i, 2) for i in range(2)] == [(1, 4), (4, 4)]  # one unit: no split inside it


# ---- relabel shards merge into the single-run store --------------------------------------------

def test_relabel_shards_merge_byte_identical(inputs, tmp_path):
    one = run_relabel(relabel_cfg(inputs["train_dir"], None, str(tmp_path / "one")), teacher=SlowTeacher())
    cfg = relabel_cfg(inputs["train_dir"], None, str(tmp_path / "sharded"))
    run_shard("relabel", cfg, (1, 2), teacher=SlowTeacher())  # any order
    with pytest.raises(InputValueError, match="shard 0 of 2 is missing"):
        merge_shards(cfg)
    run_shard("relabel", cfg, (0, 2), teacher=SlowTeacher())
    assert has_shards(cfg) == 2
    merge_shards(cfg)
    assert files(str(tmp_path / "sharded")) == files(one)
    assert has_shards(cfg) == 0 and not os.path.exists(str(tmp_path / "sharded.shards"))
    regenerated = argparse.Namespace(**{**vars(cfg), "augmentation": "regenerated"})
    with pytest.raises(InputValueError, match="written in one job"):
        run_shard("relabel", regenerated, (0, 2), teacher=SlowTeacher())


# ---- SLURM: scripts, dependencies, distributed environment -------------------------------------

@dataclasses.dataclass(frozen=True)
class Step:
    name: str
    after: tuple[str, ...]
    kind: str


TABLE = [Step("data/demo", (), "light"), Step("squeeze/teacher", ("data/demo",), "train"),
         Step("squeeze/class_stats", ("squeeze/teacher",), "light"),
         Step("recover/lpld", ("squeeze/class_stats",), "recover"),
         Step("relabel/lpld_40x", ("recover/lpld",), "relabel"),
         Step("validate/lpld_40x/seed0", ("relabel/lpld_40x",), "train"),
         Step("report", ("validate/lpld_40x/seed0",), "light")]


class PlanOnly:
    def __init__(self, done=()):
        self.done = set(done)

    def plan(self, cfg):
        return TABLE

    def step_done(self, cfg, name):
        return name in self.done

    def run_step(self, cfg, name, shard=None):
        raise AssertionError("not run here")


def test_sbatch_script_of_a_2_node_8_gpu_student_job():
    lcfg = launch_cfg(executor="slurm", nodes=2, gpus_per_node=8, partition="gpu", account="proj42",
                      time_min=720, cpus_per_task=10, mem_gb=480)
    res = resources_for("validate/lpld_40x/seed0", "train", lcfg)
    script = sbatch_script(res, lcfg, "lpld:validate", "/runs/launch", ["1234_0", "1234_1"])
    for line in ("--nodes=2", "--gpus-per-node=8", "--ntasks-per-node=8", "--time=720", "--partition=gpu",
                 "--account=proj42", "--cpus-per-task=10", "--mem=480GB", "--signal=USR2@120",
                 "--dependency=afterok:1234_0:1234_1", "--kill-on-invalid-dep=yes"):
        assert f"#SBATCH {line}" in script.splitlines(), line
    # every other GPU step is one process on one GPU; light steps ask for none
    assert "#SBATCH --gpus-per-node=1" in sbatch_script(resources_for("recover/lpld", "recover", lcfg), lcfg,
                                                        "r", "/f", array=8).splitlines()
    assert "--gpus-per-node" not in sbatch_script(resources_for("report", "light", lcfg), lcfg, "r", "/f")
    assert resources_for("squeeze/class_stats", "light", lcfg).gpus_per_node == 1  # a teacher pass
    assert resources_for("squeeze/teacher", "train", lcfg).tasks_per_node == 1


def test_distributed_environment_of_a_16_process_job(monkeypatch):
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.setenv(key, "stale")  # restored afterwards; the export must replace them
    monkeypatch.delenv("MASTER_PORT")
    monkeypatch.setenv("SUBMITIT_EXECUTOR", "slurm")
    for key, value in {"SLURM_JOB_ID": "77", "SLURM_NTASKS": "16", "SLURM_JOB_NUM_NODES": "2", "SLURM_NODEID": "1",
                       "SLURM_PROCID": "9", "SLURM_LOCALID": "1", "SLURM_JOB_NODELIST": "gpu[017-018]"}.items():
        monkeypatch.setenv(key, value)
    env = export_distributed()
    assert (env["WORLD_SIZE"], env["RANK"], env["LOCAL_RANK"], env["MASTER_ADDR"]) == ("16", "9", "1", "gpu017")
    assert os.environ["WORLD_SIZE"] == "16" and os.environ["LOCAL_WORLD_SIZE"] == "8"
    assert 20000 <= int(os.environ["MASTER_PORT"]) <= 60000  # the same on every rank: seeded by the job id


class FakeSlurmExecutor:
    """Records what the launcher asks of submitit's SlurmExecutor; gives array-style job ids."""
    submitted: list = []
    next_id = [100]

    def __init__(self, folder, max_num_timeout=3):
        self.params, self.in_batch, self.batch_jobs = {}, False, []

    def update_parameters(self, **params):
        self.params.update(params)

    @contextlib.contextmanager
    def batch(self):
        self.in_batch = True
        yield
        self.next_id[0] += 1
        for k, job in enumerate(self.batch_jobs):
            job.job_id = f"{self.next_id[0]}_{k}"

    def submit(self, call):
        job = argparse.Namespace(job_id=None, call=call, params=dict(self.params))
        if self.in_batch:
            self.batch_jobs.append(job)
        else:
            self.next_id[0] += 1
            job.job_id = str(self.next_id[0])
        self.submitted.append(job)
        return job


def test_slurm_jobs_wait_for_their_predecessors(monkeypatch, tmp_path):
    import lpld.launch.launcher as launcher_mod
    monkeypatch.setattr(launcher_mod.submitit, "SlurmExecutor", FakeSlurmExecutor)
    FakeSlurmExecutor.submitted = []
    lcfg = launch_cfg(executor="slurm", recover_shards=3, relabel_shards=2, nodes=2, gpus_per_node=8)
    cfg = argparse.Namespace(output_dir=str(tmp_path))
    jobs = Launcher(cfg, lcfg, PlanOnly(done={"data/demo", "squeeze/teacher"})).run()
    assert list(jobs) == ["squeeze/class_stats", "recover/lpld", "relabel/lpld_40x#shards", "relabel/lpld_40x",
                          "validate/lpld_40x/seed0", "report"]  # finished steps are not submitted
    ids = {k: [j.job_id for j in v] for k, v in jobs.items()}
    deps = {k: v[0].params.get("dependency") for k, v in jobs.items()}
    assert deps["squeeze/class_stats"] is None  # its predecessors are done
    assert deps["recover/lpld"] == "afterok:" + ids["squeeze/class_stats"][0]
    array = ids["recover/lpld"][0].split("_")[0]  # one array: tasks <array>_0 ... <array>_2
    assert ids["recover/lpld"] == [f"{array}_{k}" for k in range(3)]
    assert deps["relabel/lpld_40x#shards"] == f"afterok:{array}"  # waits for every task of the array
    assert deps["relabel/lpld_40x"] == "afterok:" + ids["relabel/lpld_40x#shards"][0].split("_")[0]  # the merge
    assert [j.call.shard for j in jobs["relabel/lpld_40x#shards"]] == [(0, 2), (1, 2)]
    assert jobs["relabel/lpld_40x"][0].call.shard is None
    assert "gpus_per_node" not in jobs["relabel/lpld_40x"][0].params  # the merge copies bytes
    student = jobs["validate/lpld_40x/seed0"][0]
    assert (student.params["nodes"], student.params["ntasks_per_node"], student.params["gpus_per_node"]) == (2, 8, 8)
    assert student.call.distributed and not jobs["recover/lpld"][0].call.distributed
    assert deps["report"] == "afterok:" + ids["validate/lpld_40x/seed0"][0]
    # everything done: nothing to submit
    FakeSlurmExecutor.submitted = []
    Launcher(cfg, lcfg, PlanOnly(done={s.name for s in TABLE})).run()
    assert FakeSlurmExecutor.submitted == []


# ---- local executor: a tiny table as separate processes ------------------------------------------

class TinyTable:
    """recover (class-range array) -> relabel (batch-range shards, then the merge), on the real stages."""

    def __init__(self, inputs):
        self.inputs = inputs

    def plan(self, cfg):
        return [Step("recover/lpld", (), "recover"), Step("relabel/lpld_1x", ("recover/lpld",), "relabel")]

    def stage(self, cfg, name):
        if name.startswith("recover"):
            return recover_cfg(self.inputs, os.path.join(cfg.output_dir, "recover"))
        return relabel_cfg(os.path.join(cfg.output_dir, "recover", "exp"), None,
                           os.path.join(cfg.output_dir, "labels"), batch_size=4, epochs=2)

    def step_done(self, cfg, name):
        out = cfg.output_dir
        if name == "recover/lpld":
            return all(class_complete(os.path.join(out, "recover", "exp"), c, 2) for c in range(4))
        return os.path.isfile(os.path.join(out, "labels", "progress.json"))

    def run_step(self, cfg, name, shard=None):
        events = os.path.join(cfg.output_dir, "events")
        os.makedirs(events, exist_ok=True)
        start = time.time()
        if shard is not None:
            kind = name.split("/")[0]
            run_shard(kind, self.stage(cfg, name), shard, **({"teacher": SlowTeacher()} if kind == "relabel" else {}))
        elif name.startswith("relabel") and has_shards(self.stage(cfg, name)):
            merge_shards(self.stage(cfg, name))
        else:
            raise AssertionError(f"{name} runs sharded in this test")
        tag = name.replace("/", "_") + ("" if shard is None else f"_{shard[0]}")
        with open(os.path.join(events, tag + ".json"), "w") as f:
            json.dump({"start": start, "end": time.time(), "pid": os.getpid()}, f)


@pytest.mark.slow
def test_local_executor_runs_a_tiny_table_as_dependent_processes(inputs, tmp_path):
    cfg = argparse.Namespace(output_dir=str(tmp_path / "run"))
    table = TinyTable(inputs)
    jobs = Launcher(cfg, launch_cfg(recover_shards=2, relabel_shards=2), table).run()
    assert [len(v) for v in jobs.values()] == [2, 2, 1]  # recover array, relabel shards, the merge
    ev = {f[:-5]: json.load(open(os.path.join(cfg.output_dir, "events", f)))
          for f in os.listdir(os.path.join(cfg.output_dir, "events"))}
    assert len({e["pid"] for e in ev.values()} | {os.getpid()}) == 6  # each job its own process
    recover = [ev["recover_lpld_0"], ev["recover_lpld_1"]]
    shards = [ev["relabel_lpld_1x_0"], ev["relabel_lpld_1x_1"]]
    assert max(e["end"] for e in recover) <= min(e["start"] for e in shards)  # the dependencies
    assert max(e["end"] for e in shards) <= ev["relabel_lpld_1x"]["start"]
    # the same bytes as single-process runs
    ref = str(tmp_path / "ref")
    images = run_recovery(recover_cfg(inputs, os.path.join(ref, "recover")))
    assert files(images) == files(os.path.join(cfg.output_dir, "recover", "exp"))
    store = run_relabel(relabel_cfg(images, None, os.path.join(ref, "labels"), batch_size=4, epochs=2),
                        teacher=SlowTeacher())
    assert files(store) == files(os.path.join(cfg.output_dir, "labels"))
    # resubmitting the same command submits nothing
    assert Launcher(cfg, launch_cfg(recover_shards=2, relabel_shards=2), table).units() == []


# ---- preemption: the warning signal requeues the job, which resumes --------------------------------

class SlowRelabel:
    def __init__(self, train_dir):
        self.train_dir = train_dir

    def plan(self, cfg):
        return [Step("relabel/slow", (), "relabel")]

    def step_done(self, cfg, name):
        return False

    def run_step(self, cfg, name, shard=None):
        print(f"[run] {name}", flush=True)
        teacher = SlowTeacher()
        teacher.delay = 0.25
        run_relabel(relabel_cfg(self.train_dir, None, cfg.output_dir, epochs=2, commit_every=1), teacher=teacher)


def _children(pid: int) -> list[int]:
    with open(f"/proc/{pid}/task/{pid}/children") as f:
        return [int(p) for p in f.read().split()]


@pytest.mark.slow
@pytest.mark.skipif(not os.path.isdir("/proc/self/task"), reason="finds the job's process through /proc")
def test_warning_signal_requeues_and_the_job_resumes_to_the_same_store(inputs, tmp_path):
    out = str(tmp_path / "labels")
    launcher = Launcher(argparse.Namespace(output_dir=out), launch_cfg(), SlowRelabel(inputs["train_dir"]),
                        folder=str(tmp_path / "jobs"))
    [unit] = launcher.units()
    [job] = launcher.submit(unit)
    progress = os.path.join(out, "progress.json")
    deadline = time.time() + 120
    while not (os.path.isfile(progress) and json.load(open(progress))["committed"] >= 2):
        assert time.time() < deadline and not job.done(), job.stderr()
        time.sleep(0.1)
    [task] = _children(int(job.job_id))  # the controller's one task: our step
    os.kill(task, signal.SIGUSR2)  # what SLURM sends before the time limit or on preemption
    job.wait()
    launcher._check(unit)
    assert json.load(open(progress))["committed"] == 12
    assert "preempted" in job.stderr() and "Requeued job" in job.stdout()
    assert job.stdout().count("[run] relabel/slow") == 2  # ran again, resuming from the committed batches
    ref = run_relabel(relabel_cfg(inputs["train_dir"], None, str(tmp_path / "ref"), epochs=2), teacher=SlowTeacher())
    assert files(out) == files(ref)


def test_launch_options_from_the_yaml_launch_section_and_the_command_line(tmp_path):
    from lpld.launch.cli import parse
    from lpld.pipeline import PIPELINE_SCHEMA
    path = tmp_path / "table.yaml"
    path.write_text("methods: [lpld]\nipc: 50\nlaunch:\n  executor: slurm\n  recover_shards: 8\n  partition: a\n")
    cfg, lcfg, _ = parse(PIPELINE_SCHEMA, ["--config", str(path), "--partition", "b", "--ipc", "10"], "lpld launch")
    assert (cfg.methods, cfg.ipc) == (["lpld"], 10)
    assert (lcfg.executor, lcfg.recover_shards, lcfg.partition, lcfg.relabel_shards) == ("slurm", 8, "b", 1)
    path.write_text("launch:\n  partitionn: a\n")
    with pytest.raises(SystemExit):  # an unknown launch key is an error naming it
        parse(PIPELINE_SCHEMA, ["--config", str(path)], "lpld launch")
