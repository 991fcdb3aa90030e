"""Fault injection on demo-sized runs of every long stage, through the command line.

Each stage is run once uninterrupted (the reference), then the same command is killed -- SIGTERM
(a scheduler stopping the job) and SIGKILL (a node failure) -- at points chosen by a seeded random
generator once the stage has made progress, rerun until it finishes, and its artifacts compared
with the reference: byte for byte (recovered JPEGs, label stores of both formats, the class-BN
teacher), tensor for tensor for float training (teacher, student). A SIGTERM must end the run
with status 143, a resume hint, and no worker process left behind. Also: a second concurrent
writer, a full disk (a size-limited tmpfs where the test may mount one) and truncated files.
"""
from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time

import pytest
import torch

from conftest import assert_learned
from lpld.utils.safe_load import safe_torch_load

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = {**os.environ, "PYTHONPATH": REPO, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
SEED = 1234
TIMEOUT = 600  # seconds per command (a loaded CI machine imports torch slowly)


def _cmd(*args):
    return [sys.executable, "-m", "lpld.cli", *map(str, args)]


def run(*args, check=True):
    proc = subprocess.run(_cmd(*args), capture_output=True, text=True, env=ENV, cwd=REPO, timeout=TIMEOUT)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(map(str, args[:1]))} failed ({proc.returncode}):\n{proc.stdout[-3000:]}"
                             f"\n{proc.stderr[-3000:]}")
    return proc


def _group_alive(pgid: int) -> list[int]:
    """Pids still in process group ``pgid`` (the killed command and its DataLoader workers)."""
    alive = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[2]) == pgid and fields[0] != "Z":
                alive.append(int(entry))
    return alive


def kill_when(args, ready, sig, delay):
    """Start the command, wait until ``ready()`` (progress made), sleep ``delay``, send ``sig``.
    Returns the finished process (or None when it finished before the signal)."""
    proc = subprocess.Popen(_cmd(*args), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV,
                            cwd=REPO, start_new_session=True)
    deadline = time.time() + TIMEOUT
    while proc.poll() is None and not ready() and time.time() < deadline:
        time.sleep(0.05)
    time.sleep(delay)
    if proc.poll() is not None:
        out, err = proc.communicate()
        assert proc.returncode == 0, err[-3000:]
        return None
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=TIMEOUT)
    if sig == signal.SIGTERM:
        # -SIGTERM: the signal came before the command installed its handler (still importing)
        assert proc.returncode in (143, -signal.SIGTERM), (proc.returncode, err[-3000:])
        if proc.returncode == 143:
            assert "interrupted by SIGTERM" in err and "rerun the same command to resume" in err, err[-3000:]
            assert "Traceback" not in err, err[-3000:]
        deadline = time.time() + 10
        while _group_alive(proc.pid) and time.time() < deadline:  # workers stop with their parent
            time.sleep(0.1)
        assert not _group_alive(proc.pid), "worker processes outlived the terminated command"
    else:
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # a node failure takes the workers too
        except ProcessLookupError:
            pass
        assert proc.returncode == -signal.SIGKILL
    return proc


def files(path, skip=()):
    out = {}
    for root, _, names in os.walk(path):
        for name in names:
            rel = os.path.relpath(os.path.join(root, name), path)
            if not rel.endswith(skip):
                with open(os.path.join(root, name), "rb") as f:
                    out[rel] = f.read()
    return out


def same_weights(a: str, b: str) -> None:
    sa = safe_torch_load(a, what="checkpoint")["model"]
    sb = safe_torch_load(b, what="checkpoint")["model"]
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k


def count_lines(path):
    try:
        with open(path) as f:
            return sum(1 for line in f if line.strip())
    except OSError:
        return 0


def committed(store):
    try:
        with open(os.path.join(store, "progress.json")) as f:
            return json.load(f)["committed"]
    except (OSError, ValueError):
        return 0


def authors_files(store):
    return sum(len([f for f in os.listdir(os.path.join(store, d)) if f.endswith(".tar")])
               for d in os.listdir(store) if d.startswith("epoch_")) if os.path.isdir(store) else 0


def interrupt_and_finish(args, ready_points, extra=lambda: [], rng=None) -> list:
    """Kill ``args`` (+ ``extra()``, evaluated at each start: e.g. ``--resume`` once a checkpoint
    exists) once per (ready, max_delay, signal) of ``ready_points``, each run continuing the previous
    one, then run it to completion. Returns the killed processes (None: finished before the signal)."""
    rng = rng or random.Random(SEED)
    killed = [kill_when(list(args) + extra(), ready, sig, rng.uniform(0, max_delay))
              for ready, max_delay, sig in ready_points]
    run(*(list(args) + extra()))
    return killed


# --- the demo-sized world -----------------------------------------------------------------------------
# Every case starts the stages as processes and kills them at seeded points: the whole module is
# the slow tier (CI runs it; `pytest -m "not slow"` skips it).
pytestmark = pytest.mark.slow

@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Demo data (3 classes, 16 px), a trained teacher and its class-BN version, recovered images and
    a label store, all made by uninterrupted runs (the references)."""
    root = tmp_path_factory.mktemp("faults")
    data = str(root / "data")
    run("make-demo", data, "--num-classes", 3, "--image-size", 16, "--train-per-class", 16, "--val-per-class", 4)
    w = {"root": root, "data": data}
    # lr 0.01: at 0.05 this batch-8 ResNet-18 diverges on every kernel path (val loss 1.1 -> ~8000)
    w["train_args"] = ["squeeze-train", "--dataset", "demo", "--data-path", data, "--epochs", 3, "--batch-size", 8,
                       "--image-size", 16, "--workers", 0, "--device", "cpu", "--no-progress", "--lr", 0.01,
                       "--warmup-epochs", 1, "--tiny-stem", "--no-amp"]
    run(*w["train_args"], "--output-dir", root / "teacher")
    assert_learned(str(root / "teacher" / "metrics.jsonl"), chance=100 / 3, what="fault-injection teacher")
    w["teacher"] = str(root / "teacher" / "teacher.pth")
    w["stats_args"] = ["class-stats", "--dataset", "demo", "--data-path", data, "--weights", w["teacher"],
                       "--batch-size", 8, "--image-size", 16, "--workers", 0, "--device", "cpu", "--no-progress",
                       "--tiny-stem", "--no-amp"]
    run(*w["stats_args"], "--output", root / "teacher_class_bn.pth")
    w["class_bn"] = str(root / "teacher_class_bn.pth")
    w["recover_args"] = ["recover", "--teacher", w["class_bn"], "--dataset", "demo", "--tiny-stem", "--ipc", 2,
                         "--image-size", 16, "--iterations", 12, "--lr", 0.1, "--jitter-min", -2, "--jitter-max", 2,
                         "--groups-per-step", 2, "--device", "cpu", "--no-progress"]
    run(*w["recover_args"], "--output-dir", root / "recover", "--exp-name", "ref")
    w["images"] = str(root / "recover" / "ref")
    w["relabel_args"] = ["relabel", "--dataset", "demo", "--train-dir", w["images"], "--teacher-ckpt", w["class_bn"],
                         "--tiny-stem", "--batch-size", 2, "--epochs", 40, "--input-size", 16, "--mix-type", "cutmix",
                         "--workers", 2, "--device", "cpu", "--no-progress", "--commit-every", 2]
    run(*w["relabel_args"], "--output-dir", root / "labels_ref")
    w["labels"] = str(root / "labels_ref")
    w["validate_args"] = ["validate", "--dataset", "demo", "--train-dir", w["images"], "--label-dir", w["labels"],
                          "--val-dir", os.path.join(data, "val"), "--batch-size", 2, "--epochs", 3, "--workers", 0,
                          "--device", "cpu", "--no-progress", "--val-interval", 1, "--model", "resnet18"]
    run(*w["validate_args"], "--output-dir", root / "student_ref")
    return w


# --- fast tier: relabel (ours) under SIGTERM and SIGKILL, concurrent writer, truncation, full disk ---
def test_relabel_killed_and_terminated_resumes_byte_identical(world):
    out = world["root"] / "labels_killed"
    args = world["relabel_args"] + ["--output-dir", out]
    # the kill points are drawn as commit counts (of 120 batches) and the signal follows within 0.1 s:
    # a fast machine must not finish the store between the ready point and the signal
    rng = random.Random(SEED)
    first, second, third = rng.randint(4, 30), rng.randint(40, 60), rng.randint(70, 90)
    killed = interrupt_and_finish(args, [
        (lambda: committed(out) >= first, 0.1, signal.SIGTERM),
        (lambda: committed(out) >= second, 0.1, signal.SIGKILL),
        (lambda: committed(out) >= third, 0.1, signal.SIGTERM),
    ], rng=rng)
    assert any(p is not None and p.returncode == 143 for p in killed), "no SIGTERM reached a running relabel"
    assert files(out) == files(world["labels"])


def test_a_concurrent_second_writer_is_refused_and_the_first_finishes(world):
    out = world["root"] / "labels_concurrent"
    args = world["relabel_args"] + ["--output-dir", out, "--epochs", 30, "--workers", 0]
    # the second writer imports everything first and starts on a signal, while the first is paused
    # mid-run holding its lock: neither import time nor compute speed decides the race
    second = subprocess.Popen([sys.executable, "-c", "import sys; import lpld.cli, lpld.relabel.generate; "
                               "print('ready', flush=True); sys.stdin.readline(); lpld.cli.main(sys.argv[1:])",
                               *map(str, world["relabel_args"] + ["--output-dir", out, "--overwrite", "--fkd-seed", 7])],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env=ENV, cwd=REPO)
    assert second.stdout.readline().strip() == "ready"
    first = subprocess.Popen(_cmd(*args), env=ENV, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True)
    deadline = time.time() + TIMEOUT
    while first.poll() is None and committed(out) < 2 and time.time() < deadline:
        time.sleep(0.05)
    running = first.poll() is None
    if running:  # paused mid-run, lock held: the second writer meets it whatever the machine's speed
        first.send_signal(signal.SIGSTOP)
    try:
        _, err2 = second.communicate("go\n", timeout=TIMEOUT)
    finally:
        if running:
            first.send_signal(signal.SIGCONT)
    _, err1 = first.communicate(timeout=TIMEOUT)
    assert first.returncode == 0, err1[-3000:]  # the first writer is never disturbed
    assert committed(out) == 90
    if not running:
        pytest.skip("the first writer finished before the second started")
    assert second.returncode == 2 and f"pid {first.pid}" in err2 and "Traceback" not in err2, err2[-3000:]
    assert run("check-labels", "--store", out).returncode == 0  # every batch intact


def test_truncated_store_is_refused_then_repaired_from_the_command_line(world):
    out = world["root"] / "labels_truncated"
    shutil.copytree(world["labels"], out)
    logits = out / "logits.npy"
    with open(logits, "r+b") as f:
        f.truncate(os.path.getsize(logits) // 3)
    proc = run(*world["relabel_args"], "--output-dir", out, check=False)
    assert proc.returncode == 2 and "truncated" in proc.stderr and "--repair" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    run("check-labels", "--store", out, "--train-dir", world["images"], "--teacher-ckpt", world["class_bn"],
        "--repair", "--device", "cpu")
    assert files(out) == files(world["labels"])


def _mount_tmpfs(path, size):
    os.makedirs(path, exist_ok=True)
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a size-limited tmpfs needs root")
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.decode().strip()}")


def test_full_disk_is_one_line_before_work_and_keeps_completed_work(world):
    small = world["root"] / "small_disk"
    _mount_tmpfs(small, "16k")  # fewer pages than the store's files need
    try:
        proc = run(*world["relabel_args"], "--output-dir", small / "labels", check=False)
        assert proc.returncode == 2 and "not enough disk space for the label store" in proc.stderr, proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1 and not os.listdir(small)
    finally:
        subprocess.run(["umount", str(small)], capture_output=True)
    _mount_tmpfs(small, "128k")
    try:  # recovered images: what is complete stays; a class that cannot fit is refused before work
        shutil.copytree(world["images"], small / "rec" / "ref", ignore=shutil.ignore_patterns("new002"))
        before = files(small / "rec")
        with open(small / "filler", "wb", buffering=0) as f:
            try:
                while True:
                    f.write(b"\0" * 4096)
            except OSError:
                pass
        proc = run(*world["recover_args"], "--output-dir", small / "rec", "--exp-name", "ref", check=False)
        assert proc.returncode == 2 and "not enough disk space for the recovered images" in proc.stderr, proc.stderr
        assert "Traceback" not in proc.stderr and files(small / "rec") == before
    finally:
        subprocess.run(["umount", str(small)], capture_output=True)


# --- slow tier: every other long stage under both signals ------------------------------------------------
def test_authors_format_relabel_killed_resumes_byte_identical(world):
    ref = world["root"] / "authors_ref"
    run(*world["relabel_args"], "--output-dir", ref, "--format", "authors")
    out = world["root"] / "authors_killed"
    args = world["relabel_args"] + ["--output-dir", out, "--format", "authors"]
    interrupt_and_finish(args, [
        (lambda: authors_files(out) >= 5, 0.5, signal.SIGKILL),
        (lambda: authors_files(out) >= 12, 0.5, signal.SIGTERM),
    ])
    assert files(out) == files(ref)


def test_teacher_training_killed_resumes_to_the_same_weights(world):
    out = world["root"] / "teacher_killed"
    args = world["train_args"] + ["--output-dir", out]
    metrics = out / "metrics.jsonl"
    interrupt_and_finish(args, [
        (lambda: count_lines(metrics) >= 1, 0.3, signal.SIGTERM),
        (lambda: count_lines(metrics) >= 2, 0.3, signal.SIGKILL),
    ], extra=lambda: ["--resume"] if (out / "checkpoint.pth").exists() else [])
    same_weights(out / "teacher.pth", world["teacher"])
    assert [r["epoch"] for r in map(json.loads, open(metrics))] == [1, 2, 3]  # no duplicated rows


def test_class_statistics_pass_killed_rerun_gives_the_same_checkpoint(world):
    out = world["root"] / "cbn_killed.pth"
    args = world["stats_args"] + ["--output", out]
    rng = random.Random(SEED + 1)
    lock = out.parent / ".cbn_killed.pth.lpld.lock"  # exists while the pass runs
    for sig in (signal.SIGTERM, signal.SIGKILL):
        kill_when(args, lock.exists, sig, rng.uniform(0, 1.0))
    run(*args)
    assert not [f for f in os.listdir(out.parent) if f.startswith(".cbn_killed")]
    same_weights(str(out), world["class_bn"])


def test_recover_with_several_classes_per_step_killed_gives_the_same_jpegs(world):
    out = world["root"] / "recover"
    exp = out / "killed"
    args = world["recover_args"] + ["--output-dir", out, "--exp-name", "killed"]
    interrupt_and_finish(args, [
        (lambda: (exp / "recover.json").exists(), 1.0, signal.SIGTERM),
        (lambda: (exp / "new001").exists(), 0.5, signal.SIGKILL),
    ])
    assert files(exp, skip=(".jsonl", ".csv")) == files(world["images"], skip=(".jsonl", ".csv"))
    # (shards over class ranges: tests/test_recover.py::test_one_job_shards_and_a_resumed_job_write_the_same_jpegs)


def test_student_training_killed_resumes_to_the_same_weights(world):
    out = world["root"] / "student_killed"
    args = world["validate_args"] + ["--output-dir", out, "--resume"]
    metrics = out / "metrics.jsonl"
    interrupt_and_finish(args, [
        (lambda: count_lines(metrics) >= 1, 0.5, signal.SIGKILL),
        (lambda: count_lines(metrics) >= 2, 0.5, signal.SIGTERM),
    ])
    same_weights(out / "checkpoint.pth", world["root"] / "student_ref" / "checkpoint.pth")
    assert [r["epoch"] for r in map(json.loads, open(metrics))] == [1, 2, 3]
