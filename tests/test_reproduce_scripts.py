"""The paper-table scripts (relabel_and_validate/scripts/reproduce/*.sh) run end to end in SMOKE mode.

SMOKE=1 runs each script's real code path (its configs, loops and stage CLIs) on the built-in demo
data on CPU, with the stage options overridden by extra flags (2 classes, 16 px, ipc 2, 2 recovery
iterations, 10 label epochs). One demo teacher, one image root and one label root are shared by
all scripts (session fixture), so later scripts reuse what earlier ones recovered / relabelled;
each script gets its own OUT (students) and RESULTS.

Re-running a finished script must skip every stage and append no row: results.csv rows are keyed
by (table, student folder), so each finished run appears exactly once per table.

Total: about 3 minutes on the shared 2-core sandbox (mostly Python start-up of ~30 stage calls).
"""
from __future__ import annotations

import csv
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPTS = os.path.join(REPO, "relabel_and_validate", "scripts", "reproduce")

# script -> expected rows in SMOKE mode: (table, dataset, method, label_mode, prune_ratio, metric,
# granularity, student). Mirrors the smoke lists at the top of each script.
EXPECTED = {
    "table2_tiny": [
        ("table2", "tiny", "lpld", "full", "0", "order", "epoch", "resnet18"),
        ("table2", "tiny", "lpld", "full", "0.9", "random", "batch_to_epoch", "resnet18"),
    ],
    "table3_in1k": [("table3", "in1k", "lpld", "full", "0.9", "random", "batch_to_epoch", "resnet18")],
    "table4_19_ablation": [
        ("table4_19", "in1k", m, "full", "0.9", "random", "batch_to_epoch", "resnet18")
        for m in ("sre2l", "cb_global", "lpld")
    ],
    "table5_pruning_metric": [
        ("table5", "in1k", "lpld", "full", "0.5", m, "epoch", "resnet18") for m in ("random", "order")
    ],
    "table6_large_ratio_r50_cross_arch": [
        ("table6a", "in1k", "lpld", "full", "0.95", "random", "batch_to_epoch", "resnet18"),
        ("table6b", "in1k", "lpld", "full", "0.9", "random", "batch_to_epoch", "resnet50"),
        ("table6c", "in1k", "lpld", "full", "0.9", "random", "batch_to_epoch", "mobilenet_v2"),
    ],
    # ImageNet-21K keeps random / batch_to_epoch at ratio 0.0, as the authors' in21k scripts
    "table7_in21k": [("table7", "in21k", "lpld", "full", "0.0", "random", "batch_to_epoch", "resnet18")],
    "table20_high_ipc": [("table20", "in1k", "lpld", "full", "0.9", "random", "batch_to_epoch", "resnet18")],
    "less_label_tiny": [("less_label_tiny", "tiny", "lpld", "less", "0.9", "random", "batch_to_epoch", "resnet18")],
    "less_label_in1k": [("less_label_in1k", "in1k", "lpld", "less", "0.9", "random", "batch_to_epoch", "resnet18")],
    "less_label_in21k": [("less_label_in21k", "in21k", "lpld", "less", "0.9", "random", "batch_to_epoch", "resnet18")],
}

ALL_SCRIPTS = sorted(f for f in os.listdir(SCRIPTS) if f.endswith(".sh"))


def test_every_table_script_is_covered():
    tables = sorted(f[:-3] for f in ALL_SCRIPTS if not f.startswith("_"))
    assert tables == sorted(EXPECTED)


@pytest.mark.parametrize("script", ALL_SCRIPTS)
def test_bash_syntax(script):
    subprocess.run(["bash", "-n", os.path.join(SCRIPTS, script)], check=True)


@pytest.fixture(scope="session")
def smoke_root(tmp_path_factory):
    """Shared demo data + demo class-BN teacher (built once by the library's smoke_setup)."""
    root = tmp_path_factory.mktemp("reproduce_smoke")
    env = _env(root, root / "setup")
    subprocess.run(["bash", "-c", f'source "{SCRIPTS}/_lib.sh"; smoke_setup'], env=env, check=True,
                   capture_output=True, text=True)
    assert (root / "assets" / "teacher_class_bn.pth").is_file()
    return root


def _env(root, out):
    env = dict(os.environ)
    for key in ("IPCS", "RATIOS", "STUDENTS", "METHODS", "RESULTS", "VAL_DIR", "TEACHER", "RELABEL_TEACHER",
                "RECOVER", "LABEL_MODE", "GPUS", "RECOVER_ARGS", "RELABEL_ARGS", "VALIDATE_ARGS"):
        env.pop(key, None)
    env.update(SMOKE="1", PYTHON=sys.executable, OMP_NUM_THREADS="1", OUT=str(out),
               SMOKE_ASSETS=str(root / "assets"), IMAGES_ROOT=str(root / "images"),
               LABELS_ROOT=str(root / "labels"))
    return env


def _run(script, env):
    # from another working directory: the scripts must find the repository themselves
    return subprocess.run(["bash", os.path.join(SCRIPTS, script + ".sh")], env=env, cwd="/",
                          capture_output=True, text=True, timeout=600)


def _rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.mark.parametrize("script", sorted(EXPECTED))
def test_smoke_run_then_rerun_skips(script, smoke_root):
    out = smoke_root / script
    env = _env(smoke_root, out)
    first = _run(script, env)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    results = out / "results.csv"
    rows = _rows(results)
    got = [(r["table"], r["dataset"], r["method"], r["label_mode"], r["prune_ratio"], r["metric"],
            r["granularity"], r["student"]) for r in rows]
    assert got == EXPECTED[script]
    for r in rows:
        assert r["ipc"] == "2"
        assert 0.0 <= float(r["top1"]) <= 100.0 and 0.0 <= float(r["top5"]) <= 100.0
        assert int(r["label_bytes_used"]) > 0 and int(r["label_bytes_store"]) > 0
        assert int(r["wall_s"]) >= 0
        assert os.path.isfile(os.path.join(r["out_dir"], "final.json"))
    before = results.read_text()

    second = _run(script, env)
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    assert "[run ]" not in second.stdout, second.stdout  # every stage skipped
    assert second.stdout.count("[skip] student") == len(EXPECTED[script])
    assert results.read_text() == before  # no row appended, none duplicated


def test_missing_val_dir_is_an_error(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("VAL_DIR", "SMOKE")}
    env.update(PYTHON=sys.executable, OUT=str(tmp_path / "out"))
    proc = subprocess.run(["bash", os.path.join(SCRIPTS, "table3_in1k.sh")], env=env, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode != 0
    assert "VAL_DIR" in proc.stderr
    assert not (tmp_path / "out" / "results.csv").exists()


def test_missing_images_without_recover_names_the_fixes(tmp_path):
    val = tmp_path / "val"
    val.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("SMOKE", "RECOVER")}
    env.update(PYTHON=sys.executable, OUT=str(tmp_path / "out"), VAL_DIR=str(val),
               IMAGES_ROOT=str(tmp_path / "images"), IPCS="10", RATIOS="0.975")
    proc = subprocess.run(["bash", os.path.join(SCRIPTS, "less_label_in1k.sh")], env=env, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode != 0
    assert "LPLD_in1k_rn18_4k_ipc10" in proc.stderr and "download.sh" in proc.stderr and "RECOVER=1" in proc.stderr
