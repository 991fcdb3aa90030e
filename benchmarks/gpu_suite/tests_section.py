"""Section ``tests``: the CUDA-marked tests in a pytest subprocess with a timeout, read back into
counts and the ids of what failed (files that cannot be collected on the machine listed apart)."""
from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
import time

from .common import BUDGET, NOT_MEASURED, REPO
from .suite import Suite

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
    t0 = time.perf_counter()
    output, rc = _pytest(cmd, timeout)
    sec["pytest_seconds"] = time.perf_counter() - t0
    parsed = parse_pytest(output)
    sec.update(returncode=rc if rc is not None else "n/a (timed out)", timeout_s=timeout, **parsed,
               output_tail=output[-4000:])
    sec["status"] = _status(rc, parsed, timeout)


def _pytest(cmd: list[str], timeout: float) -> tuple[str, int | None]:
    """pytest's output and exit status (None: it ran past ``timeout``; the output so far is kept)."""
    # this tree's lpld first, whatever the caller's PYTHONPATH holds
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([REPO] + [x for x in [os.environ.get("PYTHONPATH")] if x]))
    try:
        proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as err:
        out = err.stdout or b""
        return (out.decode(errors="replace") if isinstance(out, bytes) else out), None
    return proc.stdout + proc.stderr, proc.returncode


def _status(rc: int | None, parsed: dict, timeout: float) -> str:
    if rc is None:
        return f"timed out after {timeout:.0f} s"
    if parsed["counts"]["failed"] or parsed["failing"]:
        return "failed"
    if rc not in (0, 1, 5) or parsed["summary_line"].startswith("n/a"):
        return f"error: pytest exited with {rc}"
    # rc 1 with nothing failing: files that cannot be collected here (listed), nothing else
    return "ok"
