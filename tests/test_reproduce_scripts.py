"""The paper-table scripts (relabel_and_validate/scripts/reproduce/*.sh) in SMOKE mode.

Cheap checks for every script: bash syntax, and its plan (``--dry-run``: the pipeline parses the
script's whole command line, builds every step and stops) holds the rows its smoke grid promises.
Slow checks: one script end to end on generated data, rerun skipping everything; and the authors'
released label format (``epoch_{e}/batch_{b}.tar`` + ``sampler_indices_epoch.json``, no record of
the image size) trained through the scripts' command lines and through the documented
``lpld validate`` command, which takes the crop size from the dataset preset (Tiny-ImageNet: 64).
"""
from __future__ import annotations

import glob
import json
import os
import shlex
import subprocess
import sys

import pytest

from conftest import REPO
from lpld.config import parse_config
from lpld.pipeline import PIPELINE_SCHEMA, plan

SCRIPTS = os.path.join(REPO, "relabel_and_validate", "scripts", "reproduce")
ALL = sorted(os.path.basename(f)[:-3] for f in glob.glob(os.path.join(SCRIPTS, "*.sh")) if "/_" not in f)

# script -> validate steps of its SMOKE plan (ipc 2, seed 0)
EXPECTED = {
    "table2_tiny": ["lpld_ipc2_1x", "lpld_ipc2_10x", "random_real_ipc2_1x", "random_real_ipc2_10x"],
    "less_label_tiny": ["lpld_ipc2_10x_random_batch_to_epoch"],
    "table3_in1k": ["lpld_ipc2_10x", "random_real_ipc2_10x"],
    "less_label_in1k": ["lpld_ipc2_10x_random_batch_to_epoch"],
    "table4_19_ablation": ["sre2l_ipc2_10x", "cb_global_ipc2_10x", "lpld_ipc2_10x"],
    "table5_pruning_metric": ["lpld_ipc2_2x_random_epoch", "lpld_ipc2_2x_order_epoch",
                              "lpld_ipc2_2x_entropy_batch_to_epoch"],
    "table6_large_ratio_r50_cross_arch": ["lpld_ipc2_10x_resnet18", "lpld_ipc2_10x_mobilenet_v2"],
    "table7_in21k": ["lpld_ipc2_1x_random_batch_to_epoch"],
    "less_label_in21k": ["lpld_ipc2_10x_random_batch_to_epoch"],
    "table8_rded_in1k": ["rded_ipc2_1x", "rded_ipc2_10x", "random_real_ipc2_1x", "random_real_ipc2_10x"],
    "table8_rded_tiny": ["rded_ipc2_10x", "random_real_ipc2_10x"],
    "table20_high_ipc": ["lpld_ipc2_10x"],
    "lpqld_in1k": ["lpld_ipc2_2x", "lpld_ipc2_top1_2x"],
    "lpqld_tiny": ["lpld_ipc2_2x", "lpld_ipc2_top1_2x"],
    "hald_in1k": ["lpld_ipc2_1x_S6", "lpld_ipc2_hard"],
    "hald_tiny": ["lpld_ipc2_1x_S6", "lpld_ipc2_hard"],
}


def _env(root, **extra):
    env = {k: v for k, v in os.environ.items() if k not in ("OUT", "DATA_PATH", "VAL_DIR", "TEACHER",
                                                            "RELABEL_TEACHER", "IMAGES_ROOT", "LABELS_ROOT")}
    env.update(SMOKE="1", PYTHON=sys.executable, OMP_NUM_THREADS="1", OUT=str(root / "out"),
               SMOKE_ASSETS=str(root / "assets"), PYTHONPATH=REPO)
    env.update(extra)
    return env


def _run(script, env, *args, timeout=900):
    # from another working directory: the scripts find the repository themselves
    return subprocess.run(["bash", os.path.join(SCRIPTS, script + ".sh"), *args], env=env, cwd="/",
                          capture_output=True, text=True, timeout=timeout)


def test_every_script_is_covered():
    assert sorted(EXPECTED) == ALL


@pytest.mark.parametrize("script", ALL + ["_lib"])
def test_bash_syntax(script):
    subprocess.run(["bash", "-n", os.path.join(SCRIPTS, script + ".sh")], check=True)


def test_dry_run_prints_the_plan(tmp_path):
    proc = _run("table2_tiny", _env(tmp_path), "--dry-run", timeout=120)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    validate = [line.split("/")[1] for line in proc.stdout.splitlines() if line.startswith("todo validate/")]
    assert validate == EXPECTED["table2_tiny"]


@pytest.mark.parametrize("script", ALL)
def test_smoke_plan(script, tmp_path, monkeypatch):
    """The script's whole command line (PYTHON=echo prints it instead of running it), parsed and
    planned in this process: the rows its smoke grid promises."""
    proc = _run(script, _env(tmp_path, PYTHON="echo"), timeout=60)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    argv = shlex.split(proc.stdout.splitlines()[-1])
    assert argv[:2] == ["-m", "lpld.pipeline"], argv
    monkeypatch.chdir(REPO)
    cfg = parse_config(PIPELINE_SCHEMA, argv[2:])
    validate = [s.name.split("/")[1] for s in plan(cfg) if s.name.startswith("validate/")]
    assert validate == EXPECTED[script]


def _write_authors_store(ours, dst):
    """Our store -> the authors' released layout, without our side files (their stores record no
    image size, no manifest)."""
    subprocess.run([sys.executable, "-m", "lpld.cli", "convert-labels", "--src", ours, "--dst", dst, "--to",
                    "authors"], check=True, capture_output=True, cwd=REPO)
    for extra in ("lpld_manifest.json", "lpld_checksums.tsv"):
        if os.path.exists(os.path.join(dst, extra)):
            os.remove(os.path.join(dst, extra))
    assert os.path.isfile(os.path.join(dst, "epoch_0", "batch_0.tar"))
    assert os.path.isfile(os.path.join(dst, "sampler_indices_epoch.json"))


@pytest.mark.slow
def test_smoke_run_rerun_and_the_authors_label_format(tmp_path):
    env = _env(tmp_path, IMAGES_ROOT=str(tmp_path / "images"), LABELS_ROOT=str(tmp_path / "labels"))
    first = _run("less_label_tiny", env)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    rows = json.load(open(tmp_path / "out" / "results.json"))
    assert [(r["method"], r["prune_ratio"], r["n"]) for r in rows] == [("lpld", 0.9, 1)]
    second = _run("less_label_tiny", env)
    assert second.returncode == 0 and "[run ] validate" not in second.stdout and "[run ] relabel" not in second.stdout

    # the same labels in the authors' format, in a fresh label root: the script trains from them as
    # they are (nothing relabelled)
    store = "lpld_ipc2_10x"
    _write_authors_store(str(tmp_path / "labels" / store), str(tmp_path / "authors" / store))
    env2 = dict(env, LABELS_ROOT=str(tmp_path / "authors"), OUT=str(tmp_path / "out2"))
    third = _run("less_label_tiny", env2)
    assert third.returncode == 0, third.stdout[-3000:] + third.stderr[-3000:]
    assert f"[skip] relabel/{store}" in third.stdout and "[run ] validate" in third.stdout

    # the documented command on a Tiny-ImageNet preset, no --image-size: 64 px from the preset
    data = tmp_path / "assets" / "data"
    out = tmp_path / "student_tiny"
    proc = subprocess.run([sys.executable, "-m", "lpld.cli", "validate", "--config",
                           "relabel_and_validate/configs/tiny.yaml", "--dataset", "tiny", "--num-classes", "2",
                           "--train-dir", str(tmp_path / "images" / "lpld_ipc2"),
                           "--label-dir", str(tmp_path / "authors" / store), "--val-dir", str(data / "val"),
                           "--batch-size", "2", "--epochs", "10", "--prune-ratio", "0.9", "--workers", "0",
                           "--device", "cpu", "--no-progress", "--output-dir", str(out)],
                          cwd=REPO, capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "does not record image_size" not in proc.stderr
    assert os.path.isfile(out / "final.json")
