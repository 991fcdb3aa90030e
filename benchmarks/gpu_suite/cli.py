"""The command: its flags, the choice of profile, and the sections run in order, each recorded
whatever happens in it (a failing section leaves its error in the document; the others still run)."""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time

import torch

from .common import DEFAULT_ORDER, SECTIONS, clean, now_iso
from .profiles import GPU_PROFILE, SMOKE_PROFILE
from .report import summary
from .speed import run_speed
from .stages import run_stages
from .suite import Suite, failure, rows_status
from .tests_section import run_tests

RUNNERS = {"tests": lambda suite, work: run_tests(suite), "stages": run_stages, "speed": run_speed}


def main(argv: list[str] | None = None) -> int:
    p = parser()
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


def parser() -> argparse.ArgumentParser:
    doc = sys.modules[__package__].__doc__  # the package's: what each section measures, the JSON it writes
    p = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--output-dir", required=True, help="gpu_suite.json and gpu_suite.md go here")
    p.add_argument("--cpu-smoke", action="store_true", help="the same code at toy sizes on the CPU (CI)")
    p.add_argument("--budget-s", type=float, default=None,
                   help="do not start a measurement whose estimated cost would overrun this many seconds")
    p.add_argument("--only", nargs="+", default=None, metavar="SECTION",
                   help=f"run these sections, in this order ({', '.join(SECTIONS)}; spaces or commas; "
                        f"default: {' '.join(DEFAULT_ORDER)})")
    p.add_argument("--work-dir", default=None, help="scratch folder for generated data (default: a temporary one, "
                                                    "removed after)")
    return p


def run_section(suite: Suite, name: str, work: str) -> None:
    sec = suite.section(name)
    print(f"[{suite.elapsed():6.1f}s] section {name}", flush=True)
    sec["status"] = "running"
    _timed(sec, lambda: RUNNERS[name](suite, work))
    if sec["status"] == "running":  # a section that set no status of its own: what its rows say
        sec["status"] = rows_status(sec)
    suite.save()


def run_deferred(suite: Suite) -> None:
    """The speed section's secondary measurements, once every section has had its turn."""
    sec = suite.section("speed")
    if not suite.deferred or sec["status"].startswith("error"):
        return
    print(f"[{suite.elapsed():6.1f}s] section speed: the other compiled K values", flush=True)
    _timed(sec, lambda: [task() for task in suite.deferred])
    if not sec["status"].startswith("error"):
        sec["status"] = rows_status(sec)
    suite.save()


def _timed(sec: dict, fn) -> None:
    """Run ``fn``, adding its time to the section's seconds; an exception becomes the section's error."""
    t0 = time.perf_counter()
    try:
        fn()
    except Exception as err:  # noqa: BLE001 - record it; the other sections still run
        sec.update(failure(err))
    sec["seconds"] = sec.get("seconds", 0.0) + time.perf_counter() - t0
