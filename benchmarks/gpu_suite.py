#!/usr/bin/env python
"""Every piece of GPU evidence from one command: the CUDA tests, each stage once, the speed ratios.

    python benchmarks/gpu_suite.py --output-dir DIR [--cpu-smoke] [--budget-s N] [--only SECTION ...]

Sections (run in the order given to ``--only``; default tests, speed, stages: the speed ratios are
evidence nothing else gives, while the CUDA tests already run the stages' GPU paths in miniature, so
when a budget runs short it is the last stages that give way):

* ``tests``: ``python -m pytest -q -m cuda tests`` in a subprocess with a timeout: counts and the ids
  of failing tests (files that cannot be collected on the machine are listed apart).
* ``stages``: every stage once on a generated demo dataset, with bf16 autocast, channels_last and
  torch.compile where the stage has them: teacher training, class statistics, recovery (LPLD
  class mode and SRe2L), relabel, validate, diversity. Wall time and peak GPU memory per stage.
* ``speed``: side by side in this process, on the same inputs, each comparison as a ratio of two
  measured numbers: recovery image-iterations/s (ours: K classes per step, bf16, compiled; the
  authors' loop: one class per step, fp32, eager) at the ImageNet-1K and Tiny-ImageNet shapes;
  the class-statistics pass vs a plain forward; student steps/s reading labels from our store vs
  the authors' per-batch files; the device-side input path vs PIL; teacher training images/s.

``DIR/gpu_suite.json`` and ``DIR/gpu_suite.md`` are rewritten (atomically) after every measurement,
so a run killed at a time limit leaves everything that finished. With ``--budget-s`` a measurement
whose estimated cost would overrun the budget is not started and reads "not run: time budget".
Measurements run in order of value: the headline of each comparison first; the compiled recovery
at the other K values (a compile each) after every section.

``--cpu-smoke`` runs the same code at toy sizes on the CPU (timm's test_resnet, 16-48 px,
torch.compile with the aot_eager backend) in well under a minute; tests/test_gpu_suite.py runs it
in CI, so this command cannot rot between GPU windows. Its numbers are not benchmarks.

JSON (``schema: lpld-gpu-suite/1``)::

    {"schema", "suite": {mode, command, started, finished, elapsed_s, budget_s, sections, complete},
     "environment": {device, gpu_name, gpu_memory_gib, compute_capability, torch, cuda, cudnn,
                     torchvision, timm, numpy, pillow, python, platform, cpu_count, torch_threads,
                     cudnn_benchmark, tf32_matmul, tf32_cudnn, lpld_source_sha1, git_commit,
                     imported: {submitit, gdown}},
     "settings": {the whole profile: every size, count and option used},
     "sections": {"tests": {status, seconds, command, returncode, counts, failing, collection_errors,
                            output_tail},
                  "stages": {status, seconds, rows: {STAGE: {status, wall_s, peak_gpu_memory_mib,
                             amp, channels_last, compile, result}}},
                  "speed": {status, seconds, recovery, class_stats, labels, input_path, teacher}}}

Every number is finite; what was not measured is a string starting with "not measured" (or
"n/a" where it does not apply, e.g. GPU memory on the CPU). A ratio is ``{"value", "numerator",
"denominator", ["goal", "goal_met"]}``, numerator and denominator being JSON pointers
(``/sections/speed/...``) to the two measured numbers it divides.
"""
from __future__ import annotations

import argparse
import contextlib
import datetime
import hashlib
import importlib.util
import json
import math
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
import types

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path[:0] = [REPO, HERE]  # this tree's lpld, and the benchmark modules beside this file

import torch  # noqa: E402

# The benchmarks measured elsewhere, reused as they are (their CLIs print the same figures).
import bench_class_stats  # noqa: E402
import bench_input_path  # noqa: E402
import bench_recover  # noqa: E402
import bench_validate  # noqa: E402

# The lpld entry points this suite drives (nothing here imports lpld.launch: it needs submitit).
from lpld.analysis.diversity import SCHEMA as DIVERSITY_SCHEMA, run_diversity  # noqa: E402
from lpld.config import resolve  # noqa: E402
from lpld.data import ImageFolder, make_demo_dataset  # noqa: E402
from lpld.labels import convert  # noqa: E402
from lpld.models import build_model  # noqa: E402
from lpld.recover import RECOVER_SCHEMA, run_recovery  # noqa: E402
from lpld.relabel import run_relabel  # noqa: E402
from lpld.squeeze import CLASS_STATS_SCHEMA, TRAIN_SCHEMA, run_class_stats, run_teacher_training  # noqa: E402
from lpld.squeeze.train import train_one_epoch as teacher_train_one_epoch  # noqa: E402
from lpld.validate import run_validate  # noqa: E402

SCHEMA = "lpld-gpu-suite/1"
SECTIONS = ("tests", "stages", "speed")  # the order of the JSON's "sections"
DEFAULT_ORDER = ("tests", "speed", "stages")  # the order they run in without --only (module docstring)
NOT_MEASURED = "not measured"
BUDGET = "not run: time budget"
NOT_REACHED = "not run: the run ended before this measurement"
NA_CPU = "n/a (cpu)"
MIB = 2 ** 20

# Figures measured elsewhere, recorded beside ours for reference; never used in a ratio.
ANCHORS = {
    "recovery_authors_code_h100_image_iters_per_s": {
        "imagenet1k": 1786, "tiny": 3608,
        "source": "the authors' recovery code on an H100 (224 px ipc 50, 64 px ipc 100), not this run"},
    "class_stats_authors_loop_vs_plain_forward": {
        "value": 96.6, "source": "the authors' per-class loop at ImageNet-1K, not this run"},
}

# ---- profiles: every size and option the suite uses (recorded whole in the JSON) ---------------------
GPU_PROFILE = {
    "device": "cuda",
    "compile_backend": "inductor",
    # Estimated seconds per measurement for the budget check (H100: a ResNet-18 compile with inductor
    # is tens of seconds, a timed eager measurement a few; tests include a small inductor compile).
    "need_s": {"tests": 120, "stage": 30, "compile": 90, "measure": 25},
    "tests": {"paths": ["tests"], "timeout_s": 300},
    "stages": {
        "demo": {"num_classes": 10, "image_size": 64, "train_per_class": 50, "val_per_class": 10, "seed": 0},
        "model": "resnet18", "tiny_stem": True, "workers": 8,
        "teacher": {"epochs": 2, "batch_size": 128, "lr": 0.1, "warmup_epochs": 0},
        "class_stats": {"batch_size": 128},
        "recover": {"ipc": 10, "iterations": 50, "lr": 0.1, "r_bn": 0.05, "jitter_min": -4, "jitter_max": 4},
        "relabel": {"epochs": 4, "batch_size": 50, "input_path": "device"},
        "validate": {"train_epochs": 4, "adamw_lr": 0.001, "temperature": 4.0, "input_path": "device"},
        "diversity": {"batch_size": 128, "real_per_class": 20},
    },
    "speed": {
        "recovery": {
            "model": "resnet18", "ks": [1, 4, 10], "iters": 10, "warmup": 3, "augment_draw": "per_group",
            # bench_recover.SETTINGS gives size, classes, stem, dataset, lr, r_bn and jitter of each shape
            "settings": {"imagenet1k": {"ipc": 50}, "tiny": {"ipc": 100}},
        },
        "class_stats": {"model": "resnet18", "num_classes": 1000, "batch_size": 256, "image_size": 224,
                        "repeats": 5, "loop_repeats": 1},
        "labels": {"model": "resnet18", "size": 224, "classes": 1000, "batch_size": 128, "images": 1280,
                   "epochs": 3, "steps": 10, "workers": 12, "repeats": 2, "reads": 50},
        "input_path": {"size": 224, "images": 256, "batch": 128, "batches": 2, "repeats": 2,
                       "feed_images_per_s": 10000},
        "teacher": {"model": "resnet18", "tiny_stem": True, "num_classes": 200, "image_size": 64,
                    "batch_size": 256, "steps": 30, "warmup_steps": 3, "lr": 0.2},
    },
}

SMOKE_PROFILE = {
    "device": "cpu",
    "compile_backend": "aot_eager",  # traces like inductor, generates no code: seconds on a CPU
    "need_s": {"tests": 30, "stage": 5, "compile": 10, "measure": 5},
    "tests": {"paths": ["tests"], "timeout_s": 120},
    # 32 px and up: at 16 px timm's test_resnet ends in 1 x 1 feature maps, where the CPU's bf16
    # channels_last convolution backward was seen to return non-finite gradients now and then
    # (torch 2.14.1; it depended on what the allocator had handed out before): a toy-size artefact
    "stages": {
        "demo": {"num_classes": 4, "image_size": 32, "train_per_class": 6, "val_per_class": 2, "seed": 0},
        "model": "timm/test_resnet", "tiny_stem": False, "workers": 0,
        "teacher": {"epochs": 1, "batch_size": 12, "lr": 0.05, "warmup_epochs": 0},
        "class_stats": {"batch_size": 12},
        "recover": {"ipc": 2, "iterations": 2, "lr": 0.1, "r_bn": 0.05, "jitter_min": -1, "jitter_max": 1},
        "relabel": {"epochs": 2, "batch_size": 4, "input_path": "device"},
        "validate": {"train_epochs": 1, "adamw_lr": 0.001, "temperature": 4.0, "input_path": "device"},
        "diversity": {"batch_size": 8, "real_per_class": 2},
    },
    "speed": {
        "recovery": {
            "model": "timm/test_resnet", "ks": [1, 2], "iters": 1, "warmup": 1, "augment_draw": "per_group",
            "settings": {"imagenet1k": {"ipc": 2, "image_size": 48, "num_classes": 10, "tiny_stem": False},
                         "tiny": {"ipc": 2, "image_size": 32, "num_classes": 10, "tiny_stem": False}},
            # each compiled K costs a compile (seconds even with aot_eager): the toy run compiles
            # the headline K only; a setting may name its own "compiled_ks"
            "compiled_ks": [2],
        },
        "class_stats": {"model": "timm/test_resnet", "num_classes": 10, "batch_size": 8, "image_size": 32,
                        "repeats": 1, "loop_repeats": 1},
        "labels": {"model": "timm/test_resnet", "size": 16, "classes": 10, "batch_size": 4, "images": 16,
                   "epochs": 2, "steps": 2, "workers": 0, "repeats": 1, "reads": 5},
        "input_path": {"size": 32, "images": 8, "batch": 4, "batches": 1, "repeats": 1,
                       "feed_images_per_s": 10000},
        "teacher": {"model": "timm/test_resnet", "tiny_stem": False, "num_classes": 10, "image_size": 32,
                    "batch_size": 4, "steps": 2, "warmup_steps": 1, "lr": 0.2},
    },
}


# ---- small helpers -----------------------------------------------------------------------------------
def now_iso() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def atomic_write(path: str, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary sibling: a reader (or a kill) never sees half a file."""
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=os.path.dirname(path))
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.chmod(tmp, 0o644)  # mkstemp makes it owner-only; results are meant to be read
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise


def clean(value):
    """JSON-ready copy: numpy/torch scalars as Python numbers, a non-finite float as an explicit string."""
    if isinstance(value, dict):
        return {str(k): clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [clean(v) for v in value]
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        value = value.item()
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        with contextlib.suppress(Exception):
            value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return f"not finite: {value}"
    return value


def pointer_get(doc: dict, pointer: str):
    node = doc
    for part in pointer.strip("/").split("/"):
        node = node[part]
    return node


def is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def mib(nbytes) -> float | str:
    return nbytes / MIB if nbytes is not None else NA_CPU


def reset_compiler() -> None:
    """Forget every compiled graph: each measurement then compiles its own static graph, as a fresh
    process does (dynamo would otherwise reuse, or make dynamic, graphs of an earlier shape)."""
    torch._dynamo.reset()


class Suite:
    """The result document, the time budget and the writer of the two output files."""

    def __init__(self, args, profile: dict, device: torch.device, argv: list[str]) -> None:
        self.t0 = time.perf_counter()
        self.out = os.path.abspath(args.output_dir)
        os.makedirs(self.out, exist_ok=True)
        self.budget_s = args.budget_s
        self.profile, self.device = profile, device
        self.cuda = device.type == "cuda"
        self.ratios: list[tuple[dict, str, str, str, tuple[str, float] | None, str]] = []
        self.deferred: list = []  # speed measurements that run after every section
        sections = args.only or list(DEFAULT_ORDER)
        self.doc = {
            "schema": SCHEMA,
            "suite": {"mode": "cpu-smoke" if args.cpu_smoke else "gpu",
                      "command": [sys.executable, os.path.abspath(__file__)] + argv,
                      "started": now_iso(), "finished": None, "elapsed_s": 0.0,
                      "budget_s": args.budget_s if args.budget_s is not None else "none",
                      "sections": sections, "complete": False},
            "environment": environment(device),
            "settings": profile,
            "anchors": ANCHORS,
            "sections": {name: {"status": "not run: not selected (--only)"} if name not in sections
                         else {"status": NOT_REACHED} for name in SECTIONS},
        }

    # -- time --
    def elapsed(self) -> float:
        return time.perf_counter() - self.t0

    def allows(self, need_s: float) -> bool:
        return self.budget_s is None or self.elapsed() + need_s <= self.budget_s

    def remaining(self) -> float | None:
        return None if self.budget_s is None else max(0.0, self.budget_s - self.elapsed())

    # -- ratios --
    def ratio(self, where: dict, name: str, numerator: str, denominator: str, goal: tuple[str, float] | None = None,
              unit: str = "x"):
        """Declare ``where[name]`` = value at ``numerator`` / value at ``denominator`` (JSON pointers),
        recomputed at every save so it always matches the numbers it divides. ``unit``: "x" (a
        speed ratio) or "share" (a fraction, printed as a percentage)."""
        self.ratios.append((where, name, numerator, denominator, goal, unit))

    def _refresh_ratios(self) -> None:
        for where, name, num, den, goal, unit in self.ratios:
            entry = {"numerator": num, "denominator": den, "unit": unit}
            try:
                a, b = pointer_get(self.doc, num), pointer_get(self.doc, den)
            except (KeyError, TypeError):
                a = b = f"{NOT_MEASURED}: not reached"
            if is_number(a) and is_number(b) and b != 0:
                entry["value"] = a / b
            else:
                missing = a if not is_number(a) else b
                entry["value"] = missing if isinstance(missing, str) else f"{NOT_MEASURED}: zero denominator"
            if goal is not None:
                op, bound = goal
                entry["goal"] = f"{op} {bound:g}" + (f" ({100 * bound:g}%)" if unit == "share" else "")
                v = entry["value"]
                entry["goal_met"] = ({"<=": v <= bound, "<": v < bound, ">=": v >= bound}[op]
                                     if is_number(v) else NOT_MEASURED)
            where[name] = entry

    # -- output --
    def save(self) -> None:
        self._refresh_ratios()
        s = self.doc["suite"]
        s["elapsed_s"] = self.elapsed()
        self.doc["environment"]["imported"] = imported_optional()
        doc = clean(self.doc)
        atomic_write(os.path.join(self.out, "gpu_suite.json"), json.dumps(doc, indent=1, allow_nan=False) + "\n")
        atomic_write(os.path.join(self.out, "gpu_suite.md"), render_markdown(doc))

    def section(self, name: str) -> dict:
        return self.doc["sections"][name]


def imported_optional() -> dict:
    """Whether the modules the GPU machine lacks were imported by anything this run touched."""
    return {name: name in sys.modules and sys.modules[name] is not None for name in ("submitit", "gdown")}


def _version(module: str) -> str:
    try:
        return __import__(module).__version__
    except Exception as err:  # noqa: BLE001 - record why instead of failing the run
        return f"n/a ({type(err).__name__})"


def _source_sha1() -> str:
    """SHA-1 over lpld's Python sources (path and content): names the code even where no .git travels."""
    h = hashlib.sha1()
    root = os.path.join(REPO, "lpld")
    for dirpath, dirnames, files in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d != "__pycache__")
        for f in sorted(files):
            if f.endswith(".py"):
                path = os.path.join(dirpath, f)
                h.update(os.path.relpath(path, REPO).encode() + b"\0")
                with open(path, "rb") as fh:
                    h.update(fh.read())
    return h.hexdigest()


def _git_commit() -> str:
    try:
        out = subprocess.run(["git", "-C", REPO, "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10)
        dirty = subprocess.run(["git", "-C", REPO, "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return "n/a (no git)"
    if out.returncode != 0:
        return "n/a (no git metadata)"
    return out.stdout.strip() + (" (modified)" if dirty.stdout.strip() else "")


def environment(device: torch.device) -> dict:
    import numpy
    import PIL
    env = {"device": str(device), "python": platform.python_version(), "platform": platform.platform(),
           "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
           "cuda": torch.version.cuda or "n/a (cpu build)",  # the CUDA torch was built with
           "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else "n/a",
           "torchvision": _version("torchvision"), "timm": _version("timm"), "numpy": numpy.__version__,
           "pillow": PIL.__version__, "lpld_source_sha1": _source_sha1(), "git_commit": _git_commit(),
           "tf32_matmul": torch.backends.cuda.matmul.allow_tf32, "tf32_cudnn": torch.backends.cudnn.allow_tf32}
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        env.update(gpu_name=torch.cuda.get_device_name(device), gpu_count=torch.cuda.device_count(),
                   gpu_memory_gib=props.total_memory / 2 ** 30, compute_capability=f"{props.major}.{props.minor}",
                   cudnn_benchmark=True)
        try:
            smi = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                                 capture_output=True, text=True, timeout=20)
            env["driver"] = smi.stdout.strip().splitlines()[0] if smi.returncode == 0 and smi.stdout.strip() \
                else "n/a (nvidia-smi failed)"
        except (OSError, subprocess.TimeoutExpired):
            env["driver"] = "n/a (no nvidia-smi)"
    else:
        env.update(gpu_name=NA_CPU, gpu_count=0, gpu_memory_gib=NA_CPU, compute_capability=NA_CPU,
                   driver=NA_CPU, cudnn_benchmark=False)
    return env


def failure(err: BaseException) -> dict:
    return {"status": f"error: {type(err).__name__}: {str(err)[:500]}",
            "traceback": traceback.format_exc()[-3000:]}


def measure(suite: Suite, where: dict, key: str, need_s: float, fields: tuple[str, ...], fn,
            label: str | None = None) -> dict | None:
    """``where[key] = {"status": "ok", **fn()}`` unless the budget is near; failures and OOMs are
    recorded (the run goes on). ``fields``: the numbers ``fn`` returns, set to "not measured: WHY"
    when it does not run, so ratios over them say why."""
    if not suite.allows(need_s):
        where[key] = {"status": BUDGET, **{f: f"{NOT_MEASURED}: time budget" for f in fields}}
        suite.save()
        return None
    t0 = time.perf_counter()
    try:
        row = {"status": "ok", **fn()}
    except torch.OutOfMemoryError:
        torch.cuda.empty_cache()
        row = {"status": f"{NOT_MEASURED}: out of memory", **{f: f"{NOT_MEASURED}: out of memory" for f in fields}}
    except Exception as err:  # noqa: BLE001 - one failed measurement must not lose the others
        row = {**failure(err), **{f: f"{NOT_MEASURED}: error" for f in fields}}
    row["seconds"] = time.perf_counter() - t0
    where[key] = row
    print(f"  [{suite.elapsed():6.1f}s] {label or key}: {row['status']} ({row['seconds']:.1f}s)", flush=True)
    suite.save()
    return row


def placeholders(where: dict, keys, fields: tuple[str, ...]) -> None:
    for key in keys:
        where[key] = {"status": NOT_REACHED, **{f: f"{NOT_MEASURED}: not reached" for f in fields}}


# ---- section 1: the CUDA-marked tests ------------------------------------------------------------------
COUNT = re.compile(r"(\d+) (passed|failed|skipped|deselected|errors?|xfailed|xpassed|warnings?)\b")


def parse_pytest(output: str) -> dict:
    """Counts from pytest's last summary line, and the ids of failed/errored tests from -rfE."""
    counts = {k: 0 for k in ("passed", "failed", "skipped", "deselected", "errors", "xfailed", "xpassed")}
    summary = [line for line in output.splitlines() if COUNT.search(line) and re.search(r" in [\d.]+s", line)]
    if summary:
        for n, what in COUNT.findall(summary[-1]):
            what = "errors" if what.startswith("error") else what
            if what in counts:
                counts[what] = int(n)
    failing, collection = [], []
    for line in output.splitlines():
        m = re.match(r"^(FAILED|ERROR) (\S+)", line)
        if m:
            # an ERROR naming a file (no ::) is a module that could not be collected here
            (failing if "::" in m.group(2) or m.group(1) == "FAILED" else collection).append(m.group(2))
    return {"counts": counts, "failing": sorted(set(failing)), "collection_errors": sorted(set(collection)),
            "summary_line": summary[-1].strip("= ") if summary else "n/a (no summary line)"}


def run_tests(suite: Suite) -> None:
    p = suite.profile["tests"]
    sec = suite.section("tests")
    cmd = [sys.executable, "-m", "pytest", "-q", "-m", "cuda", "-rfE", "--continue-on-collection-errors",
           "-p", "no:cacheprovider", *p["paths"]]
    sec.update(command=cmd, counts=f"{NOT_MEASURED}", failing=[], collection_errors=[])
    if importlib.util.find_spec("pytest") is None:
        sec["status"] = "not run: pytest is not installed here"
        return
    if not suite.allows(suite.profile["need_s"]["tests"]):
        sec["status"] = BUDGET
        return
    remaining = suite.remaining()
    timeout = p["timeout_s"] if remaining is None else max(10.0, min(p["timeout_s"], remaining - 5))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([REPO] + [x for x in [os.environ.get("PYTHONPATH")] if x]))
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)
        output, rc, timed_out = proc.stdout + proc.stderr, proc.returncode, False
    except subprocess.TimeoutExpired as err:
        out = err.stdout or b""
        output = out.decode(errors="replace") if isinstance(out, bytes) else out
        rc, timed_out = None, True
    sec["pytest_seconds"] = time.perf_counter() - t0
    parsed = parse_pytest(output)
    sec.update(returncode=rc if rc is not None else "n/a (timed out)", timeout_s=timeout, **parsed,
               output_tail=output[-4000:])
    if timed_out:
        sec["status"] = f"timed out after {timeout:.0f} s"
    elif parsed["counts"]["failed"] or parsed["failing"]:
        sec["status"] = "failed"
    elif rc not in (0, 1, 5) or parsed["summary_line"].startswith("n/a"):
        sec["status"] = f"error: pytest exited with {rc}"
    else:
        # rc 1 with nothing failing: files that cannot be collected here (listed), nothing else
        sec["status"] = "ok"


# ---- section 2: every stage once -----------------------------------------------------------------------
STAGES = ("demo_data", "teacher_training", "class_stats", "recover_lpld", "recover_sre2l", "relabel", "validate",
          "diversity")


def run_stages(suite: Suite, work: str) -> None:
    p, dev, backend = suite.profile["stages"], suite.profile["device"], suite.profile["compile_backend"]
    rows = suite.section("stages").setdefault("rows", {})
    for name in STAGES:
        rows[name] = {"status": NOT_REACHED}
    suite.save()
    demo = p["demo"]
    size, classes = demo["image_size"], demo["num_classes"]
    model = {"model": p["model"], "tiny_stem": p["tiny_stem"]}
    paths = {"data": os.path.join(work, "data"), "squeeze": os.path.join(work, "squeeze"),
             "teacher_cbn": os.path.join(work, "squeeze", "teacher_class_bn.pth"),
             "images": os.path.join(work, "images"), "labels": os.path.join(work, "labels", "lpld_ipc"),
             "student": os.path.join(work, "student"), "diversity": os.path.join(work, "diversity")}
    speed = {"amp": "bf16", "channels_last": True}
    no_compile = "not supported by the stage"

    def stage(name, flags, needs, fn):
        missing = [d for d in needs if rows[d]["status"] != "ok"]
        if missing:
            rows[name] = {"status": f"not run: needs {', '.join(missing)}"}
            suite.save()
            return
        if not suite.allows(suite.profile["need_s"]["compile" if flags.get("compile") not in (None, no_compile)
                                                    else "stage"]):
            rows[name] = {"status": BUDGET}
            suite.save()
            return
        reset_compiler()  # each stage compiles as in its own process
        if suite.cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        t0 = time.perf_counter()
        try:
            result = fn()
            if suite.cuda:
                torch.cuda.synchronize()
            row = {"status": "ok"}
        except Exception as err:  # noqa: BLE001 - later stages say which one they needed
            result, row = None, failure(err)
        row.update(wall_s=time.perf_counter() - t0,
                   peak_gpu_memory_mib=mib(torch.cuda.max_memory_allocated()) if suite.cuda else NA_CPU,
                   **flags, result=result)
        rows[name] = row
        print(f"  [{suite.elapsed():6.1f}s] stage {name}: {row['status']} ({row['wall_s']:.1f}s)", flush=True)
        suite.save()

    stage("demo_data", {}, (), lambda: {"root": make_demo_dataset(paths["data"], **demo), **demo})

    def teacher():
        t = p["teacher"]
        cfg = resolve(TRAIN_SCHEMA, [("gpu_suite", dict(
            dataset="demo", data_path=paths["data"], **model, image_size=size, batch_size=t["batch_size"],
            workers=p["workers"], device=dev, amp=True, channels_last=True, epochs=t["epochs"], lr=t["lr"],
            warmup_epochs=t["warmup_epochs"], output_dir=paths["squeeze"], progress=False, seed=0))])
        m = run_teacher_training(cfg)
        return {k: m[k] for k in ("epoch", "val_top1", "val_loss", "epoch_seconds") if k in m}
    stage("teacher_training", {**speed, "compile": no_compile}, ("demo_data",), teacher)

    def class_stats():
        cfg = resolve(CLASS_STATS_SCHEMA, [("gpu_suite", dict(
            dataset="demo", data_path=paths["data"], **model, image_size=size,
            batch_size=p["class_stats"]["batch_size"], workers=p["workers"], device=dev, amp=True,
            channels_last=True, weights=os.path.join(paths["squeeze"], "teacher.pth"),
            output=paths["teacher_cbn"], progress=False))])
        info = run_class_stats(cfg)
        return {k: info[k] for k in ("images", "seconds", "val_top1", "mode", "amp")}
    stage("class_stats", {**speed, "compile": no_compile}, ("teacher_training",), class_stats)

    r = p["recover"]

    def recover(mode: str):
        extra = ({"mode": "class", "groups_per_step": classes} if mode == "lpld" else
                 {"mode": "sre2l", "batch_size": classes, "groups_per_step": r["ipc"]})  # the same 10 x ipc batch
        cfg = resolve(RECOVER_SCHEMA, [("gpu_suite", dict(
            teacher=paths["teacher_cbn"], **model, dataset="demo", image_size=size, ipc=r["ipc"],
            iterations=r["iterations"], lr=r["lr"], r_bn=r["r_bn"], jitter_min=r["jitter_min"],
            jitter_max=r["jitter_max"], amp=True, channels_last=True, compile=True, device=dev,
            output_dir=paths["images"], exp_name=mode, progress=False, **extra))])
        # The schema's compile is on/off (inductor); the Recoverer also takes a backend name, which
        # the CPU twin needs (aot_eager): the same stage call with the backend of the profile.
        cfg.compile = backend
        root = run_recovery(cfg)
        logs = [os.path.join(root, f) for f in os.listdir(root) if f.startswith("recover_log_") and
                f.endswith(".jsonl")]
        recs = [json.loads(line) for path in logs for line in open(path) if line.strip()]
        return {"root": root, "images": len(ImageFolder(root)), "classes": len(recs),
                "teacher_top1_mean": sum(x["top1"] for x in recs) / max(1, len(recs)),
                "ce_mean": sum(x["ce"] for x in recs) / max(1, len(recs))}
    stage("recover_lpld", {**speed, "compile": backend}, ("class_stats",), lambda: recover("lpld"))
    stage("recover_sre2l", {**speed, "compile": backend}, ("class_stats",), lambda: recover("sre2l"))

    lab = p["relabel"]

    def relabel():
        out = run_relabel(dict(
            dataset="demo", train_dir=os.path.join(paths["images"], "lpld"), teacher_ckpt=paths["teacher_cbn"],
            **model, num_classes=classes, batch_size=lab["batch_size"], epochs=lab["epochs"], input_size=size,
            mix_type="cutmix", output_dir=paths["labels"], workers=p["workers"], device=dev, amp=True,
            channels_last=True, input_path=lab["input_path"], progress=False))
        from lpld.labels import open_label_store
        store = open_label_store(out)
        return {"batches": store.num_batches, "bytes": store.nbytes(), "input_path": lab["input_path"]}
    # relabel's --amp is fp16 autocast (its logits are stored as fp16)
    stage("relabel", {"amp": "fp16", "channels_last": True, "compile": no_compile}, ("recover_lpld",), relabel)

    v = p["validate"]

    def validate():
        m = run_validate(dict(
            dataset="demo", train_dir=os.path.join(paths["images"], "lpld"), label_dir=paths["labels"],
            val_dir=os.path.join(paths["data"], "val"), num_classes=classes, **model,
            batch_size=lab["batch_size"], epochs=lab["epochs"], train_epochs=v["train_epochs"],
            workers=p["workers"], device=dev, amp=True, channels_last=True, compile=True, compile_backend=backend,
            input_path=v["input_path"], output_dir=paths["student"], progress=False,
            val_interval=v["train_epochs"], adamw_lr=v["adamw_lr"], temperature=v["temperature"],
            mix_type="cutmix", seed=0))
        return {k: m[k] for k in ("top1", "top5", "best_top1", "val_loss", "label_batches_used") if k in m}
    stage("validate", {**speed, "compile": backend}, ("relabel",), validate)

    d = p["diversity"]

    def diversity():
        sets = [f"{m}={os.path.join(paths['images'], m)}" for m in ("lpld", "sre2l")
                if rows[f"recover_{m}"]["status"] == "ok"]
        cfg = resolve(DIVERSITY_SCHEMA, [("gpu_suite", dict(
            dataset="demo", **model, num_classes=classes, image_size=size, batch_size=d["batch_size"],
            workers=p["workers"], device=dev, amp=True, weights=paths["teacher_cbn"], syn=sets, real=paths["data"],
            real_per_class=d["real_per_class"], output_dir=paths["diversity"], progress=False))])
        summary = run_diversity(cfg)
        out = {}
        for name, m in summary["methods"].items():
            out[f"{name}_images"] = m["images"]
            if m.get("cosine"):
                out[f"{name}_cosine_mean"] = m["cosine"]["mean"]
        return out
    stage("diversity", {"amp": "bf16", "channels_last": True, "compile": no_compile}, ("recover_lpld",), diversity)


# ---- section 3: speed ----------------------------------------------------------------------------------
REC_FIELDS = ("sec_per_step", "image_iters_per_s", "warmup_s", "first_call_overhead_s", "peak_gpu_memory_mib")


def speed_tasks(suite: Suite, work: str) -> tuple[list, list]:
    """The measurements of the speed section as lists of (need_s, callable): the primary ones (the
    headline of every comparison, in order) and the secondary ones (the compiled recovery at the
    other K values: a compile each), which run after every other section."""
    prof, dev, backend = suite.profile["speed"], suite.device, suite.profile["compile_backend"]
    need = suite.profile["need_s"]
    sec = suite.section("speed")
    primary, secondary = [], []

    # -- recovery: image-iterations per second --
    rp = prof["recovery"]
    rec = sec["recovery"] = {"anchor_authors_code_h100_image_iters_per_s":
                             {k: v for k, v in ANCHORS["recovery_authors_code_h100_image_iters_per_s"].items()}}
    teachers: dict[str, torch.nn.Module] = {}
    for name, over in rp["settings"].items():
        size, classes, tiny, _, dataset, lr, r_bn, jitter = bench_recover.SETTINGS[name]
        spec = {"image_size": size, "num_classes": classes, "tiny_stem": tiny, "dataset": dataset, "lr": lr,
                "r_bn": r_bn, "jitter": list(jitter), **over}
        ks = sorted(rp["ks"])
        compiled_ks = sorted(spec.pop("compiled_ks", rp.get("compiled_ks", ks)))
        out = rec[name] = {"settings": {**spec, "model": rp["model"], "ks": ks, "compiled_ks": compiled_ks,
                                        "iters": rp["iters"], "warmup": rp["warmup"],
                                        "augment_draw": rp["augment_draw"]},
                           "authors_loop": {}, "ours_eager": {}, "ours_compiled": {}, "ratios": {}}
        placeholders(out["authors_loop"], ["K1"], REC_FIELDS)
        placeholders(out["ours_eager"], [f"K{k}" for k in ks], REC_FIELDS)
        placeholders(out["ours_compiled"], [f"K{k}" for k in compiled_ks], REC_FIELDS)
        base = f"/sections/speed/recovery/{name}"
        for variant, kk in (("ours_compiled", compiled_ks), ("ours_eager", ks)):
            for k in kk:
                goal = (">=", 10.0) if (name == "imagenet1k" and variant == "ours_compiled" and k == max(kk)) else None
                suite.ratio(out["ratios"], f"{variant}_K{k}_vs_authors_loop",
                            f"{base}/{variant}/K{k}/image_iters_per_s", f"{base}/authors_loop/K1/image_iters_per_s",
                            goal)

        def teacher_for(name=name, spec=spec):
            if name not in teachers:
                torch.manual_seed(0)
                teachers[name] = build_model(rp["model"], spec["num_classes"], tiny_stem=spec["tiny_stem"],
                                             class_aware=True).to(dev).eval()
            return teachers[name]

        def one(variant, k, amp, cl, compile_model, spec=spec, teacher_for=teacher_for):
            def run():
                if compile_model:
                    reset_compiler()
                r = bench_recover.measure_variant(
                    teacher_for(), lambda n: bench_recover.recovery_settings(
                        spec["image_size"], spec["dataset"], spec["lr"], spec["r_bn"], tuple(spec["jitter"]), n, amp,
                        cl, rp["augment_draw"]), spec["ipc"], k, rp["warmup"], rp["iters"], dev, compile_model)
                sps = r["sec_per_step"]
                return {"classes_per_step": k, "ipc": spec["ipc"], "batch_images": k * spec["ipc"],
                        "precision": "bf16" if amp else "fp32", "channels_last": cl,
                        "compile": compile_model or "eager", "sec_per_step": sps,
                        "image_iters_per_s": k * spec["ipc"] / sps, "warmup_s": r["warmup_s"],
                        "first_call_overhead_s": max(0.0, r["warmup_s"] - rp["warmup"] * sps),
                        "peak_gpu_memory_mib": mib(r["peak_gpu_memory_bytes"])}
            return run

        def task(variant, k, amp, cl, compile_model, need_s, where=out, name=name, one=one):
            fn = one(variant, k, amp, cl, compile_model)  # bound now: the loop rebinds the names
            return lambda: measure(suite, where[variant], f"K{k}", need_s, REC_FIELDS, fn,
                                   label=f"recovery {name} {variant} K={k}")

        top = max(compiled_ks)
        primary.append((need["measure"], task("authors_loop", 1, False, False, False, need["measure"])))
        primary.append((need["compile"], task("ours_compiled", top, True, True, backend, need["compile"])))
        primary += [(need["measure"], task("ours_eager", k, True, True, False, need["measure"])) for k in ks]
        secondary += [(need["compile"], task("ours_compiled", k, True, True, backend, need["compile"]))
                      for k in sorted(set(compiled_ks) - {top}, reverse=True)]

    # -- class statistics vs a plain forward --
    cp = prof["class_stats"]
    cs = sec["class_stats"] = {"settings": cp, "anchor_authors_loop_vs_plain_forward":
                               ANCHORS["class_stats_authors_loop_vs_plain_forward"], "ratios": {}}
    cs_fields = ("plain_s_per_batch", "ours_s_per_batch", "loop_s_per_batch")
    placeholders(cs, ["measured"], cs_fields)
    b = "/sections/speed/class_stats/measured"
    suite.ratio(cs["ratios"], "ours_vs_plain_forward", f"{b}/ours_s_per_batch", f"{b}/plain_s_per_batch", ("<=", 1.15))
    suite.ratio(cs["ratios"], "per_class_loop_vs_plain_forward", f"{b}/loop_s_per_batch", f"{b}/plain_s_per_batch")

    def class_stats():
        r = bench_class_stats.measure(cp["model"], cp["num_classes"], cp["batch_size"], cp["image_size"], dev,
                                      cp["repeats"], cp["loop_repeats"])
        return {"plain_s_per_batch": r["plain_s"], "ours_s_per_batch": r["ours_s"], "loop_s_per_batch": r["loop_s"],
                "classes_present": r["classes_present"], "precision": "fp32", "channels_last": suite.cuda}
    primary.append((need["measure"], lambda: measure(suite, cs, "measured", need["measure"], cs_fields, class_stats,
                                                     label="class statistics vs plain forward")))

    # -- student steps/s: labels from our store vs the authors' per-batch files vs memory --
    lp = prof["labels"]
    lb = sec["labels"] = {"settings": lp, "ratios": {}}
    lab_fields = ("images_per_s", "steps_per_s", "step_s", "read_s_per_batch", "data_wait_frac")
    placeholders(lb, ["ours_store", "authors_files", "in_memory"], lab_fields)
    b = "/sections/speed/labels"
    suite.ratio(lb["ratios"], "ours_vs_authors_steps_per_s", f"{b}/ours_store/steps_per_s",
                f"{b}/authors_files/steps_per_s")
    suite.ratio(lb["ratios"], "ours_vs_in_memory_steps_per_s", f"{b}/ours_store/steps_per_s",
                f"{b}/in_memory/steps_per_s")
    for key in ("ours_store", "authors_files"):
        suite.ratio(lb["ratios"], f"{key}_read_share_of_step", f"{b}/{key}/read_s_per_batch", f"{b}/{key}/step_s",
                    ("<", 0.05), unit="share")
    state: dict = {}

    def labels_setup():
        args = types.SimpleNamespace(device=str(dev), model=lp["model"], size=lp["size"], classes=lp["classes"],
                                     batch_size=lp["batch_size"], images=lp["images"], epochs=lp["epochs"],
                                     steps=lp["steps"], workers=lp["workers"], repeats=lp["repeats"])
        root = os.path.join(work, "speed_labels")
        train_dir, ours, theirs = (os.path.join(root, d) for d in ("images", "ours", "authors"))
        bench_validate.make_images(train_dir, args.images, min(args.classes, args.images), args.size)
        bench_validate.make_store(train_dir, ours, args)
        convert(ours, theirs, to="authors", progress=False, overwrite=True)
        state.update(args=args, train_dir=train_dir, dirs={"ours_store": ours, "authors_files": theirs,
                                                            "in_memory": ours})

    def labels():
        labels_setup()
        args, best = state["args"], {}
        order = ["in_memory", "ours_store", "authors_files"]
        for rep in range(args.repeats):  # interleaved, the order turned each time: spreads machine noise
            for key in (order if rep % 2 == 0 else order[::-1]):
                variant = "memory" if key == "in_memory" else "store"
                r = bench_validate.run(variant, args, state["train_dir"], state["dirs"][key], dev)
                if key not in best or r["images_per_s"] > best[key]["images_per_s"]:
                    best[key] = r
        for key, r in best.items():
            read = bench_validate.time_reads(state["dirs"][key], lp["reads"]) if key != "in_memory" else 0.0
            ips = r["images_per_s"]
            lb[key] = {"status": "ok", "images_per_s": ips, "steps_per_s": ips / args.batch_size,
                       "step_s": args.batch_size / ips, "read_s_per_batch": read,
                       "data_wait_frac": r["data_wait_frac"], "best_of": args.repeats,
                       "labels": "none read (records served from a dict)" if key == "in_memory" else
                       "our memory-mapped store" if key == "ours_store" else "the authors' batch_*.tar files"}
        return {"variants": len(best)}

    def labels_task():
        row = measure(suite, lb, "run", 2 * need["measure"], (), labels, label="student steps/s by label source")
        status = BUDGET if row is None else row["status"]
        if status != "ok":  # the three rows say why they hold no numbers
            why = "time budget" if row is None else status
            for key in ("ours_store", "authors_files", "in_memory"):
                lb[key] = {"status": status, **{f: f"{NOT_MEASURED}: {why}" for f in lab_fields}}
            suite.save()
    primary.append((2 * need["measure"], labels_task))

    # -- input path: PIL in workers vs views cut on the device --
    ip = prof["input_path"]
    inp = sec["input_path"] = {"settings": ip, "ratios": {}}
    in_fields = ("pil_decode_cpu_us_per_image", "pil_decoded_cpu_us_per_image", "device_host_cpu_us_per_image",
                 "device_wall_us_per_image", "cores_to_feed_pil_decode", "cores_to_feed_device_host")
    placeholders(inp, ["measured"], in_fields)
    b = "/sections/speed/input_path/measured"
    suite.ratio(inp["ratios"], "pil_decode_vs_device_host_cpu_us", f"{b}/pil_decode_cpu_us_per_image",
                f"{b}/device_host_cpu_us_per_image", (">=", 5.0))

    def input_path():
        args = types.SimpleNamespace(images=ip["images"], batch=ip["batch"], batches=ip["batches"],
                                     repeats=ip["repeats"])
        tmp = tempfile.mkdtemp(prefix="inputs_", dir=work)
        prepared = bench_input_path.prepare(ip["size"], args, tmp)
        r = bench_input_path.speed(ip["size"], args, tmp, cpu_compute=False, prepared=prepared)
        wall = bench_input_path.device_wall_us(prepared[0], prepared[2], ip["size"], dev, ip["repeats"])
        feed = ip["feed_images_per_s"] / 1e6  # cores = CPU-us per image x images/s / 1e6
        return {"size": ip["size"], "pil_decode_cpu_us_per_image": r["pil_decode"],
                "pil_decoded_cpu_us_per_image": r["pil_cached"], "device_host_cpu_us_per_image": r["device_host"],
                "device_wall_us_per_image": wall, "device_wall_on": str(dev),
                "cores_to_feed_pil_decode": r["pil_decode"] * feed, "cores_to_feed_pil_decoded": r["pil_cached"] * feed,
                "cores_to_feed_device_host": r["device_host"] * feed,
                "cores_formula": f"CPU-us per image x {ip['feed_images_per_s']} images/s / 1e6",
                "operators_per_batch": r["ops_per_batch"], "max_pixel_diff_pil_vs_device": r["max_pixel_diff"]}
    primary.append((need["measure"], lambda: measure(suite, inp, "measured", need["measure"], in_fields, input_path,
                                                     label="input path")))

    # -- teacher training images/s, eager vs compiled --
    tp = prof["teacher"]
    te = sec["teacher"] = {"settings": tp, "ratios": {}}
    te_fields = ("images_per_s", "step_s", "warmup_s")
    placeholders(te, ["eager", "compiled"], te_fields)
    suite.ratio(te["ratios"], "compiled_vs_eager_images_per_s", "/sections/speed/teacher/compiled/images_per_s",
                "/sections/speed/teacher/eager/images_per_s")

    def teacher(compiled: bool):
        def run():
            reset_compiler()
            torch.manual_seed(0)
            net = build_model(tp["model"], tp["num_classes"], tiny_stem=tp["tiny_stem"]).to(dev)
            net = net.to(memory_format=torch.channels_last)
            forward = torch.compile(net, backend=backend) if compiled else net
            opt = torch.optim.SGD(net.parameters(), lr=tp["lr"], momentum=0.9, weight_decay=1e-4)
            x = torch.randn(tp["batch_size"], 3, tp["image_size"], tp["image_size"], device=dev)
            x = x.contiguous(memory_format=torch.channels_last)
            y = torch.randint(0, tp["num_classes"], (tp["batch_size"],), device=dev)
            cfg = types.SimpleNamespace(epochs=1, progress=False, channels_last=True, amp=True, log_interval=1 << 30)
            crit = torch.nn.CrossEntropyLoss()
            t0 = time.perf_counter()
            teacher_train_one_epoch(forward, crit, opt, [(x, y)] * tp["warmup_steps"], dev, 0, cfg)
            warm = time.perf_counter() - t0
            if suite.cuda:
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            teacher_train_one_epoch(forward, crit, opt, [(x, y)] * tp["steps"], dev, 0, cfg)  # reads back: synced
            elapsed = time.perf_counter() - t0
            return {"images_per_s": tp["steps"] * tp["batch_size"] / elapsed, "step_s": elapsed / tp["steps"],
                    "warmup_s": warm, "compile": backend if compiled else "eager", "precision": "bf16",
                    "channels_last": True, "data": "one device-resident batch (the GPU step alone, no loading)"}
        return run
    primary.append((need["compile"], lambda: measure(suite, te, "compiled", need["compile"], te_fields, teacher(True),
                                                     label="teacher training, compiled")))
    primary.append((need["measure"], lambda: measure(suite, te, "eager", need["measure"], te_fields, teacher(False),
                                                     label="teacher training, eager")))
    return primary, secondary


def run_speed(suite: Suite, work: str) -> None:
    if suite.cuda:
        torch.backends.cudnn.benchmark = True  # as every stage sets it: each timed step repeats one shape
    primary, secondary = speed_tasks(suite, work)
    suite.save()
    for _, task in primary:
        task()
    suite.deferred = [task for _, task in secondary]


# ---- output: Markdown and the summary ------------------------------------------------------------------
def fmt(v, digits: int = 3) -> str:
    if isinstance(v, bool) or v is None:
        return str(v)
    if isinstance(v, int):
        return f"{v:,}"
    if isinstance(v, float):
        if v != 0 and (abs(v) >= 1e5 or abs(v) < 10 ** -digits):
            return f"{v:.{digits}g}"
        return f"{v:,.{digits}f}" if abs(v) < 100 else f"{v:,.1f}"
    return str(v)


def ratio_text(r: dict) -> str:
    v = r.get("value")
    if not is_number(v):
        text = str(v)
    else:
        text = f"{100 * v:.2f}%" if r.get("unit") == "share" else f"{v:.2f}x"
    if "goal" in r:
        met = r["goal_met"]
        text += f" (goal {r['goal']}: {'met' if met is True else 'not met' if met is False else met})"
    return text


def render_markdown(doc: dict) -> str:
    env, s = doc["environment"], doc["suite"]
    smoke = s["mode"] == "cpu-smoke"
    lines = [f"# GPU suite ({s['mode']})", ""]
    if smoke:
        lines += ["CPU smoke (toy sizes, not a benchmark): the same code path as the GPU run.", ""]
    lines += [f"Started {s['started']}, elapsed {fmt(s['elapsed_s'], 1)} s, budget {s['budget_s']}, "
              f"complete: {s['complete']}. Command: `{' '.join(s['command'])}`", "",
              "| | |", "| --- | --- |"]
    for k in ("gpu_name", "gpu_memory_gib", "compute_capability", "driver", "torch", "cuda", "cudnn", "torchvision",
              "timm", "numpy", "pillow", "python", "cpu_count", "torch_threads", "tf32_matmul", "tf32_cudnn",
              "git_commit", "lpld_source_sha1", "imported"):
        lines.append(f"| {k} | {env.get(k)} |")
    sec = doc["sections"]
    t = sec["tests"]
    lines += ["", "## tests", "", f"Status: {t['status']}."]
    if isinstance(t.get("counts"), dict):
        lines.append(f"Counts: {', '.join(f'{n} {k}' for k, n in t['counts'].items() if n)}; "
                     f"failing: {', '.join(t['failing']) or 'none'}; not collectable here: "
                     f"{', '.join(t['collection_errors']) or 'none'}.")
    st = sec["stages"]
    lines += ["", "## stages", "", f"Status: {st['status']}.", "",
              "| stage | status | wall s | peak GPU MiB | amp | channels_last | compile | result |",
              "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for name, row in st.get("rows", {}).items():
        res = row.get("result")
        res = ", ".join(f"{k}={fmt(v)}" for k, v in res.items() if not isinstance(v, dict) and k != "root") \
            if isinstance(res, dict) else ""
        lines.append(f"| {name} | {row['status']} | {fmt(row.get('wall_s', ''), 1)} | "
                     f"{fmt(row.get('peak_gpu_memory_mib', ''), 0)} | {row.get('amp', '')} | "
                     f"{row.get('channels_last', '')} | {row.get('compile', '')} | {res} |")
    sp = sec["speed"]
    lines += ["", "## speed", "", f"Status: {sp['status']}."]
    rec = sp.get("recovery", {})
    for name, out in rec.items():
        if not isinstance(out, dict) or "settings" not in out:
            continue
        cfg = out["settings"]
        anchor = rec.get("anchor_authors_code_h100_image_iters_per_s", {}).get(name, "n/a")
        lines += ["", f"### recovery, {name}: {cfg['image_size']} px, ipc {cfg['ipc']}, {cfg['model']}, "
                      f"{cfg['num_classes']} classes (anchor, authors' code on an H100: {fmt(anchor)} img-it/s)", "",
                  "| variant | K | images/step | s/step | img-it/s | first call s | peak GPU MiB | vs authors' loop |",
                  "| --- | --- | --- | --- | --- | --- | --- | --- |"]
        for variant in ("authors_loop", "ours_eager", "ours_compiled"):
            for key, row in out[variant].items():
                ratio = out["ratios"].get(f"{variant}_{key}_vs_authors_loop")
                lines.append(f"| {variant} | {key[1:]} | {fmt(row.get('batch_images', ''))} | "
                             f"{fmt(row['sec_per_step'])} | {fmt(row['image_iters_per_s'], 1)} | "
                             f"{fmt(row['first_call_overhead_s'], 1)} | {fmt(row['peak_gpu_memory_mib'], 0)} | "
                             f"{ratio_text(ratio) if ratio else '1.00x (reference)'} |")
    for part in ("class_stats", "labels", "input_path", "teacher"):
        block = sp.get(part)
        if not isinstance(block, dict):
            continue
        lines += ["", f"### {part}", ""]
        for key, row in block.items():
            if key in ("settings", "ratios") or not isinstance(row, dict):
                continue
            vals = ", ".join(f"{k}={fmt(v)}" for k, v in row.items() if k not in ("traceback",))
            lines.append(f"- {key}: {vals}")
        for key, r in block.get("ratios", {}).items():
            lines.append(f"- **{key}**: {ratio_text(r)}")
    return "\n".join(lines) + "\n"


def summary(doc: dict) -> str:
    env, sec = doc["environment"], doc["sections"]
    out = [f"gpu_suite ({doc['suite']['mode']}) on {env['gpu_name']}: torch {env['torch']}, CUDA {env['cuda']}, "
           f"cuDNN {env['cudnn']}, torchvision {env['torchvision']}, timm {env['timm']}; "
           f"{fmt(doc['suite']['elapsed_s'], 1)} s"]
    t = sec["tests"]
    counts = t.get("counts")
    out.append(f"tests: {t['status']}" + (f" ({', '.join(f'{n} {k}' for k, n in counts.items() if n)})"
                                          if isinstance(counts, dict) else ""))
    for fid in t.get("failing", [])[:5]:
        out.append(f"  FAILED {fid}")
    rows = sec["stages"].get("rows", {})
    out.append(f"stages: {sec['stages']['status']}" + (": " if rows else "") + ", ".join(
        f"{n} {r['status'] if r['status'] != 'ok' else fmt(r['wall_s'], 1) + 's'}"
        + (f"/{fmt(r['peak_gpu_memory_mib'], 0)}MiB" if is_number(r.get('peak_gpu_memory_mib')) else "")
        for n, r in rows.items()))
    sp = sec["speed"]
    out.append(f"speed: {sp['status']}")
    for name, block in sp.get("recovery", {}).items():
        if isinstance(block, dict) and "ratios" in block:
            a = block["authors_loop"]["K1"]["image_iters_per_s"]
            anchor = sp["recovery"]["anchor_authors_code_h100_image_iters_per_s"].get(name)
            best = [(k, r) for k, r in block["ratios"].items() if k.startswith("ours_compiled")]
            out.append(f"  recovery {name}: authors' loop {fmt(a, 1) + ' img-it/s' if is_number(a) else a} "
                       f"(anchor, authors' code on an H100: {anchor}); "
                       + "; ".join(f"{k.split('_vs')[0].replace('ours_', '')} {ratio_text(r)}" for k, r in best))
    for part in ("class_stats", "labels", "input_path", "teacher"):
        for k, r in sp.get(part, {}).get("ratios", {}).items():
            out.append(f"  {part} {k}: {ratio_text(r)}")
    ip = sp.get("input_path", {}).get("measured", {})
    if is_number(ip.get("cores_to_feed_pil_decode")):
        out.append(f"  cores to feed {sp['input_path']['settings']['feed_images_per_s']} img/s at "
                   f"{ip['size']} px: PIL decode+view {fmt(ip['cores_to_feed_pil_decode'], 1)}, device path host "
                   f"{fmt(ip['cores_to_feed_device_host'], 2)}")
    return "\n".join(out)


# ---- main ----------------------------------------------------------------------------------------------
def run_section(suite: Suite, name: str, work: str) -> None:
    sec = suite.section(name)
    print(f"[{suite.elapsed():6.1f}s] section {name}", flush=True)
    t0 = time.perf_counter()
    sec["status"] = "running"
    try:
        if name == "tests":
            run_tests(suite)
        elif name == "stages":
            run_stages(suite, work)
        else:
            run_speed(suite, work)
    except Exception as err:  # noqa: BLE001 - record it; the other sections still run
        sec.update(failure(err))
    sec["seconds"] = sec.get("seconds", 0.0) + time.perf_counter() - t0
    if sec["status"] == "running":
        sec["status"] = rows_status(sec)
    suite.save()


def run_deferred(suite: Suite) -> None:
    """The speed section's secondary measurements, once every section has had its turn."""
    sec = suite.section("speed")
    if not suite.deferred or sec["status"].startswith("error"):
        return
    print(f"[{suite.elapsed():6.1f}s] section speed: the other compiled K values", flush=True)
    t0 = time.perf_counter()
    try:
        for task in suite.deferred:
            task()
    except Exception as err:  # noqa: BLE001
        sec.update(failure(err))
    sec["seconds"] += time.perf_counter() - t0
    if not sec["status"].startswith("error"):
        sec["status"] = rows_status(sec)
    suite.save()


def rows_status(sec: dict) -> str:
    statuses = [r.get("status", "") for r in _rows(sec)]
    bad = [x for x in statuses if x != "ok"]
    return "ok" if not bad else f"partial: {len(bad)} of {len(statuses)} not ok"


def _rows(sec: dict):
    """Every measurement row of a section (dicts with a status), however nested."""
    for key, value in sec.items():
        if isinstance(value, dict):
            if "status" in value and key != "ratios":
                yield value
            elif key not in ("settings", "ratios"):
                yield from _rows(value)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--output-dir", required=True, help="gpu_suite.json and gpu_suite.md go here")
    p.add_argument("--cpu-smoke", action="store_true", help="the same code at toy sizes on the CPU (CI)")
    p.add_argument("--budget-s", type=float, default=None,
                   help="do not start a measurement whose estimated cost would overrun this many seconds")
    p.add_argument("--only", nargs="+", default=None, metavar="SECTION",
                   help=f"run these sections, in this order ({', '.join(SECTIONS)}; spaces or commas; "
                        f"default: {' '.join(DEFAULT_ORDER)})")
    p.add_argument("--work-dir", default=None, help="scratch folder for generated data (default: a temporary one, "
                                                    "removed after)")
    argv = sys.argv[1:] if argv is None else list(argv)
    args = p.parse_args(argv)
    if args.only:
        args.only = [x for item in args.only for x in item.split(",") if x]
        unknown = [x for x in args.only if x not in SECTIONS]
        if unknown or len(set(args.only)) != len(args.only):
            p.error(f"--only: sections are {', '.join(SECTIONS)}, each once; got {' '.join(args.only)}")
    if args.cpu_smoke:
        profile, device = SMOKE_PROFILE, torch.device("cpu")
    else:
        if not torch.cuda.is_available():
            print("gpu_suite: no CUDA device here; run with --cpu-smoke for the CPU twin", file=sys.stderr)
            return 2
        profile, device = GPU_PROFILE, torch.device("cuda")
    suite = Suite(args, profile, device, argv)
    suite.save()
    work = args.work_dir or tempfile.mkdtemp(prefix="gpu_suite_")
    os.makedirs(work, exist_ok=True)
    try:
        for name in suite.doc["suite"]["sections"]:
            run_section(suite, name, work)
        run_deferred(suite)
    finally:
        if args.work_dir is None:
            shutil.rmtree(work, ignore_errors=True)
    suite.doc["suite"].update(finished=now_iso(), complete=True)
    suite.save()
    print(summary(clean(suite.doc)), flush=True)
    print(f"wrote {os.path.join(suite.out, 'gpu_suite.json')} and gpu_suite.md", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
