"""benchmarks/gpu_suite.py, the one command a GPU window runs, through its CPU twin (--cpu-smoke).

The smoke runs once per session in a subprocess where ``submitit`` and ``gdown`` cannot be imported
(the GPU machine has neither): it must finish, write both files, and hold every section with
every number finite or explicitly "not measured"/"n/a", the versions, and ratios equal to the
quotient of the two measured numbers they name. The budget and pytest-output parsing are checked
in this process, without running anything heavy."""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time

import pytest
import torch

from conftest import REPO

SUITE = os.path.join(REPO, "benchmarks", "gpu_suite.py")
STAGES = ("demo_data", "teacher_training", "class_stats", "recover_lpld", "recover_sre2l", "relabel", "validate",
          "diversity")
BLOCKED = ("submitit", "gdown")


def _leaves(node, path=""):
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _leaves(v, f"{path}/{k}")
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _leaves(v, f"{path}/{i}")
    else:
        yield path, node


def _get(doc, pointer):
    node = doc
    for part in pointer.strip("/").split("/"):
        node = node[part]
    return node


def _ratios(node, path=""):
    """Every ratio entry ({value, numerator, denominator}) in the document, by its path."""
    if isinstance(node, dict):
        if {"value", "numerator", "denominator"} <= set(node):
            yield path, node
            return
        for k, v in node.items():
            yield from _ratios(v, f"{path}/{k}")


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    """One --cpu-smoke run with submitit and gdown made unimportable: (json, markdown, seconds)."""
    tmp = tmp_path_factory.mktemp("gpu_suite")
    shim = tmp / "shim"
    for name in BLOCKED:  # packages earlier on the path than the installed ones, refusing to load
        (shim / name).mkdir(parents=True)
        (shim / name / "__init__.py").write_text(
            f"raise ImportError('{name} is not installed on the GPU machine (blocked by test_gpu_suite)')\n")
    out = tmp / "out"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(shim), REPO]), OMP_NUM_THREADS="1",
               MKL_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, SUITE, "--cpu-smoke", "--output-dir", str(out)], env=env, cwd=REPO,
                          capture_output=True, text=True, timeout=240)
    seconds = time.perf_counter() - t0
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    doc = json.loads((out / "gpu_suite.json").read_text())
    return doc, (out / "gpu_suite.md").read_text(), seconds, proc.stdout


def test_smoke_runs_every_section_without_submitit_or_gdown(smoke):
    doc, md, seconds, stdout = smoke
    print(f"\n[gpu_suite] --cpu-smoke took {seconds:.1f} s")
    assert doc["schema"] == "lpld-gpu-suite/1"
    assert doc["suite"]["mode"] == "cpu-smoke" and doc["suite"]["complete"] is True
    assert doc["environment"]["imported"] == {name: False for name in BLOCKED}
    for name in ("tests", "stages", "speed"):
        assert doc["sections"][name]["status"] == "ok", (name, doc["sections"][name].get("status"),
                                                          doc["sections"][name].get("traceback"))
    assert "CPU smoke (toy sizes, not a benchmark)" in md and "## speed" in md
    assert "speed: ok" in stdout and "recovery imagenet1k" in stdout  # the one-screen summary


def test_smoke_records_versions_and_settings(smoke):
    doc = smoke[0]
    env = doc["environment"]
    import timm
    import torchvision
    assert env["torch"] == torch.__version__ and env["torchvision"] == torchvision.__version__
    assert env["timm"] == timm.__version__
    for key in ("cuda", "cudnn", "gpu_name", "python", "numpy", "pillow", "lpld_source_sha1", "git_commit"):
        assert env[key] not in (None, ""), key
    assert env["gpu_name"] == "n/a (cpu)" and len(env["lpld_source_sha1"]) == 40
    assert doc["settings"] == json.loads(json.dumps(_suite_module().SMOKE_PROFILE))
    assert doc["suite"]["sections"] == ["tests", "speed", "stages"]  # speed before the stages by default


def test_smoke_numbers_are_finite_or_say_why_not(smoke):
    doc = smoke[0]
    numbers = 0
    for path, value in _leaves(doc):
        if isinstance(value, float):
            assert math.isfinite(value), path
            numbers += 1
        elif isinstance(value, str):
            # everything runs in the smoke: nothing skipped by a budget, unreached, failed or not finite
            assert not value.startswith(("not finite", "error", "not run", "not measured")), (path, value)
    assert numbers > 50
    # on the CPU the GPU memory is explicitly not applicable, never a made-up number
    assert all(doc["sections"]["stages"]["rows"][s]["peak_gpu_memory_mib"] == "n/a (cpu)" for s in STAGES)


def test_smoke_stages_each_ran_once_with_their_speed_settings(smoke):
    rows = smoke[0]["sections"]["stages"]["rows"]
    assert list(rows) == list(STAGES)
    for name in STAGES:
        assert rows[name]["status"] == "ok", (name, rows[name].get("traceback"))
        assert rows[name]["wall_s"] > 0
    for name in ("recover_lpld", "recover_sre2l", "validate"):
        assert rows[name]["compile"] == "aot_eager" and rows[name]["amp"] == "bf16"
    assert rows["recover_lpld"]["result"]["images"] == rows["recover_sre2l"]["result"]["images"] == 4 * 2
    assert rows["relabel"]["result"]["batches"] > 0 and "top1" in rows["validate"]["result"]


def test_smoke_ratios_divide_the_two_numbers_they_name(smoke):
    doc = smoke[0]
    ratios = dict(_ratios(doc["sections"]["speed"]))
    names = {p.rsplit("/", 1)[1] for p in ratios}
    for expected in ("ours_compiled_K2_vs_authors_loop", "ours_eager_K1_vs_authors_loop", "ours_vs_plain_forward",
                     "per_class_loop_vs_plain_forward", "ours_vs_authors_steps_per_s", "ours_store_read_share_of_step",
                     "authors_files_read_share_of_step", "pil_decode_vs_device_host_cpu_us",
                     "compiled_vs_eager_images_per_s"):
        assert expected in names, expected
    for path, r in ratios.items():
        a, b = _get(doc, r["numerator"]), _get(doc, r["denominator"])
        assert isinstance(a, (int, float)) and isinstance(b, (int, float)) and b > 0, (path, a, b)
        assert r["value"] == pytest.approx(a / b, rel=1e-12), path
        if "goal" in r:
            assert isinstance(r["goal_met"], bool), path
    rec = doc["sections"]["speed"]["recovery"]
    for name in ("imagenet1k", "tiny"):
        row = rec[name]["authors_loop"]["K1"]
        assert row["precision"] == "fp32" and row["compile"] == "eager" and row["classes_per_step"] == 1
        assert rec[name]["ours_compiled"]["K2"]["compile"] == "aot_eager"
        assert rec["anchor_authors_code_h100_image_iters_per_s"][name] in (1786, 3608)


def test_smoke_tests_section_ran_the_cuda_marked_tests(smoke):
    t = smoke[0]["sections"]["tests"]
    assert t["command"][-1] == "tests" and "cuda" in t["command"]
    counts = t["counts"]
    assert counts["failed"] == 0 and counts["skipped"] + counts["passed"] >= 1 and counts["deselected"] > 0
    # modules that cannot be imported on a machine are named (files, not test ids), never fatal
    assert all("::" not in f for f in t["collection_errors"])


def _suite_module():
    sys.path.insert(0, os.path.join(REPO, "benchmarks"))
    try:
        import gpu_suite
        return gpu_suite
    finally:
        sys.path.remove(os.path.join(REPO, "benchmarks"))


def test_budget_leaves_every_measurement_not_run_and_says_so(tmp_path, monkeypatch):
    """A budget too small for anything: every section and row says so, every ratio is
    "not measured", and both files are still written. One setting compiles a second K, which is
    deferred until after the last section: it too is reached and says why it did not run."""
    gpu_suite = _suite_module()
    tiny = dict(gpu_suite.SMOKE_PROFILE["speed"]["recovery"]["settings"]["tiny"], compiled_ks=[1, 2])
    monkeypatch.setitem(gpu_suite.SMOKE_PROFILE["speed"]["recovery"]["settings"], "tiny", tiny)
    assert gpu_suite.main(["--cpu-smoke", "--output-dir", str(tmp_path), "--budget-s", "0",
                           "--only", "speed", "tests", "stages"]) == 0
    doc = json.loads((tmp_path / "gpu_suite.json").read_text())
    assert doc["suite"]["sections"] == ["speed", "tests", "stages"]
    assert doc["sections"]["tests"]["status"] == "not run: time budget"
    assert all(r["status"] == "not run: time budget" or r["status"].startswith("not run: needs ")
               for r in doc["sections"]["stages"]["rows"].values())
    assert doc["sections"]["stages"]["rows"]["demo_data"]["status"] == "not run: time budget"
    ratios = dict(_ratios(doc["sections"]["speed"]))
    assert ratios and all(r["value"] == "not measured: time budget" for r in ratios.values())
    assert all(r.get("goal_met", "not measured") == "not measured" for r in ratios.values())
    for path, value in _leaves(doc["sections"]["speed"]):
        assert not isinstance(value, float) or path.endswith("/seconds") or "/settings/" in path \
            or "/anchor" in path, path
    deferred = doc["sections"]["speed"]["recovery"]["tiny"]["ours_compiled"]["K1"]
    assert deferred["status"] == "not run: time budget"
    assert deferred["image_iters_per_s"] == "not measured: time budget"
    assert "K1" not in doc["sections"]["speed"]["recovery"]["imagenet1k"]["ours_compiled"]
    assert (tmp_path / "gpu_suite.md").read_text().startswith("# GPU suite (cpu-smoke)")


def test_only_selected_sections_run(tmp_path):
    gpu_suite = _suite_module()
    assert gpu_suite.main(["--cpu-smoke", "--output-dir", str(tmp_path), "--budget-s", "0", "--only", "tests"]) == 0
    doc = json.loads((tmp_path / "gpu_suite.json").read_text())
    assert doc["sections"]["stages"]["status"] == doc["sections"]["speed"]["status"] == \
        "not run: not selected (--only)"
    assert gpu_suite.main(["--cpu-smoke", "--output-dir", str(tmp_path), "--budget-s", "0",
                           "--only", "speed,tests"]) == 0
    assert json.loads((tmp_path / "gpu_suite.json").read_text())["suite"]["sections"] == ["speed", "tests"]
    for bad in (["bogus"], ["tests", "tests"]):
        with pytest.raises(SystemExit):
            gpu_suite.main(["--cpu-smoke", "--output-dir", str(tmp_path), "--only", *bad])


def test_pytest_output_is_parsed_into_counts_and_failing_ids():
    gpu_suite = _suite_module()
    out = ("..F.sE\n"
           "=========================== short test summary info ============================\n"
           "FAILED tests/test_recover.py::test_cuda_run_recovery_with_amp - AssertionError: x\n"
           "ERROR tests/test_relabel.py::test_generation_and_replay_on_cuda - RuntimeError: y\n"
           "ERROR tests/test_launch.py - ModuleNotFoundError: No module named 'submitit'\n"
           "1 failed, 3 passed, 1 skipped, 440 deselected, 2 errors in 12.34s\n")
    r = gpu_suite.parse_pytest(out)
    assert r["counts"] == {"passed": 3, "failed": 1, "skipped": 1, "deselected": 440, "errors": 2, "xfailed": 0,
                           "xpassed": 0}
    assert r["failing"] == ["tests/test_recover.py::test_cuda_run_recovery_with_amp",
                            "tests/test_relabel.py::test_generation_and_replay_on_cuda"]
    assert r["collection_errors"] == ["tests/test_launch.py"]
    assert gpu_suite.parse_pytest("Traceback: boom\n")["summary_line"].startswith("n/a")


def test_window_script_leaves_json_markdown_and_log_in_out(tmp_path):
    """benchmarks/gpu_window.sh, the prepared command of a GPU window, through its CPU switch:
    OUT receives the three files and the suite's exit status comes through the pipe. A 60 s command
    leaves the suite no budget (60 s are kept back), so nothing heavy runs here."""
    out = tmp_path / "out"
    env = dict(os.environ, OUT=str(out), SMOKE="1", ONLY="tests stages", COMMAND_S="60", PYTHON=sys.executable,
               OMP_NUM_THREADS="1")
    proc = subprocess.run(["bash", os.path.join(REPO, "benchmarks", "gpu_window.sh")], env=env, cwd=str(tmp_path),
                          capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert sorted(os.listdir(out)) == ["gpu_suite.json", "gpu_suite.log", "gpu_suite.md"]
    doc = json.loads((out / "gpu_suite.json").read_text())
    assert doc["suite"]["budget_s"] == 0 and doc["suite"]["sections"] == ["tests", "stages"]
    assert doc["sections"]["tests"]["status"] == "not run: time budget"
    log = (out / "gpu_suite.log").read_text()
    assert "budget 0s of a 60s command" in log and "tests: not run: time budget" in log
    env.pop("SMOKE")  # no GPU here: the suite refuses, and the wrapper must fail with it
    if not torch.cuda.is_available():
        assert subprocess.run(["bash", os.path.join(REPO, "benchmarks", "gpu_window.sh")], env=env,
                              capture_output=True, text=True, timeout=120).returncode == 2
