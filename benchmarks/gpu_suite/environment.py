"""The ``environment`` block: the machine, the versions and the code a run measured."""
from __future__ import annotations

import hashlib
import os
import platform
import subprocess
import sys

import torch

from .common import NA_CPU, REPO


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
                   cudnn_benchmark=True, driver=_driver())
    else:
        env.update(gpu_name=NA_CPU, gpu_count=0, gpu_memory_gib=NA_CPU, compute_capability=NA_CPU,
                   driver=NA_CPU, cudnn_benchmark=False)
    return env


def imported_optional() -> dict:
    """Whether the modules the GPU machine lacks were imported by anything this run touched."""
    return {name: name in sys.modules and sys.modules[name] is not None for name in ("submitit", "gdown")}


def _version(module: str) -> str:
    try:
        return __import__(module).__version__
    except Exception as err:  # noqa: BLE001 - record why instead of failing the run
        return f"n/a ({type(err).__name__})"


def _driver() -> str:
    try:
        smi = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return "n/a (no nvidia-smi)"
    if smi.returncode == 0 and smi.stdout.strip():
        return smi.stdout.strip().splitlines()[0]
    return "n/a (nvidia-smi failed)"


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
