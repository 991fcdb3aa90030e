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

The package (``benchmarks/gpu_suite.py`` is its entry point; the folder, not that file, is what
``import gpu_suite`` finds in benchmarks/):

* ``cli``: the flags, the profile, the sections in order;
* ``profiles``: every size and option of the GPU run and of its CPU twin;
* ``suite``: the document, the budget, the ratios, the atomic writes, ``measure``;
* ``environment``, ``tests_section``, ``stages``, ``speed``: what each part of the document holds;
* ``report``: gpu_suite.md and the summary printed at the end;
* ``common``: paths, names and the value helpers the others share.
"""
import os
import sys

_BENCHMARKS = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# this tree's lpld whatever is installed, and the bench_*.py modules the speed section reuses
sys.path[:0] = [os.path.dirname(_BENCHMARKS), _BENCHMARKS]

from .cli import main  # noqa: E402
from .common import SCHEMA  # noqa: E402
from .profiles import GPU_PROFILE, SMOKE_PROFILE  # noqa: E402
from .tests_section import parse_pytest  # noqa: E402

__all__ = ["GPU_PROFILE", "SCHEMA", "SMOKE_PROFILE", "main", "parse_pytest"]
