"""No file lpld reads can run code: every torch file a command loads (student and teacher resume
checkpoints, the pipeline's resume over a shared folder, teachers, features files, the authors'
label batches) goes through lpld.utils.safe_load. A file carrying a pickled call is refused with a
one-line error that names it, and the call never runs; our own checkpoints and the authors' numpy
scalars still load."""
from __future__ import annotations

import io
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from lpld.cli import main, run_command
from lpld.models import build_model, save_checkpoint

pytestmark = pytest.mark.usefixtures("one_thread")

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ARCH = "timm/test_resnet"
REFUSED = "which lpld does not load"
# the settings of conftest's demo_root, so the pipeline's data step finds the very dataset it would make
DEMO_ROOT_SPEC = ["--demo-data", "num_classes=4", "image_size=16", "train_per_class=12", "val_per_class=6", "seed=0"]


class Payload:
    """Pickles as a call of a builtin that creates ``marker``: what a hostile file would do with
    os.system, made harmless and observable."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return exec, (f"open({self.marker!r}, 'w').close()",)


class ShellPayload(Payload):
    def __reduce__(self):
        return os.system, (f"touch '{self.marker}'",)


def plant(path, marker, payload=Payload, **content):
    """A torch file holding ``content`` and a payload that creates ``marker`` when unpickled."""
    os.makedirs(os.path.dirname(str(path)), exist_ok=True)
    torch.save({**content, "epoch": 1, "rng": payload(marker)}, str(path))
    return str(path)


def error_line(stderr: str) -> str:
    """The error a command ended with: its last line of stderr (warnings and progress come
    before), which must be the whole message."""
    lines = stderr.strip().splitlines()
    assert lines and "error: " in lines[-1] and REFUSED in lines[-1], stderr
    assert not any("Traceback" in line or "weights_only" in line for line in lines), stderr
    return lines[-1]


def assert_refused(capsys, marker, *names, command, argv):
    """``lpld <command> <argv>`` ends with status 2 and one error line naming ``names``; the
    payload did not run."""
    try:
        main([command, *map(str, argv)])
        status = 0
    except SystemExit as exit_:
        status = exit_.code
    except Exception as error:  # noqa: BLE001 - an unsafe loader runs the payload, then fails on the file
        status = error
    err = capsys.readouterr().err
    assert not os.path.exists(marker), "the payload ran"
    assert status == 2, (status, err)
    line = error_line(err)
    assert all(str(n) in line for n in names), err
    return line


# --- student and teacher resume -------------------------------------------------------------------
@pytest.fixture(scope="module")
def store(demo_root, tmp_path_factory, make_label_store):
    return make_label_store(os.path.join(demo_root, "train"), str(tmp_path_factory.mktemp("sl") / "labels"),
                            None, num_classes=4, batch_size=8, epochs=2)


def validate_argv(demo_root, store, out):
    return ["--dataset", "demo", "--train-dir", os.path.join(demo_root, "train"), "--label-dir", store.path,
            "--val-dir", os.path.join(demo_root, "val"), "--batch-size", "8", "--epochs", "2", "--workers", "0",
            "--model", ARCH, "--temperature", "4", "--device", "cpu", "--no-progress", "--output-dir", str(out)]


def squeeze_argv(demo_root, out):
    return ["--dataset", "demo", "--data-path", demo_root, "--model", ARCH, "--no-tiny-stem", "--image-size", "16",
            "--batch-size", "16", "--epochs", "1", "--workers", "0", "--device", "cpu", "--no-progress",
            "--output-dir", str(out)]


@pytest.mark.parametrize("payload", [Payload, ShellPayload])
def test_validate_resume_refuses_a_planted_checkpoint(demo_root, store, tmp_path, capsys, payload):
    marker = tmp_path / "ran"
    ckpt = plant(tmp_path / "out" / "checkpoint.pth", marker, payload, model={})
    line = assert_refused(capsys, marker, ckpt, command="validate",
                          argv=validate_argv(demo_root, store, tmp_path / "out") + ["--resume"])
    assert "--output-dir" in line  # the way out


def test_squeeze_train_resume_refuses_a_planted_checkpoint(demo_root, tmp_path, capsys):
    marker = tmp_path / "ran"
    ckpt = plant(tmp_path / "out" / "checkpoint.pth", marker, model={})
    assert_refused(capsys, marker, ckpt, command="squeeze-train", argv=squeeze_argv(demo_root, tmp_path / "out") +
                   ["--resume"])


def test_the_command_line_itself_reports_it_in_one_line(demo_root, store, tmp_path):
    marker = tmp_path / "ran"
    ckpt = plant(tmp_path / "out" / "checkpoint.pth", marker, ShellPayload, model={})
    proc = subprocess.run([sys.executable, "-m", "lpld.cli", "validate", "--resume",
                           *validate_argv(demo_root, store, tmp_path / "out")],
                          capture_output=True, text=True, timeout=300, cwd=REPO,
                          env={**os.environ, "PYTHONPATH": REPO, "OMP_NUM_THREADS": "1"})
    assert not marker.exists(), "the payload ran"
    assert proc.returncode == 2, proc.stderr
    assert ckpt in error_line(proc.stderr), proc.stderr


def test_our_checkpoints_load_safely_and_restore_numpy_rng(demo_root, store, tmp_path):
    from lpld.utils.runtime import set_rng_state
    from lpld.utils.safe_load import safe_torch_load
    run_command("validate", validate_argv(demo_root, store, tmp_path / "v"))
    run_command("squeeze-train", squeeze_argv(demo_root, tmp_path / "s"))
    for path in (tmp_path / "v" / "checkpoint.pth", tmp_path / "s" / "checkpoint.pth", tmp_path / "s" / "teacher.pth"):
        state = safe_torch_load(str(path), what="checkpoint")
        assert all(isinstance(v, torch.Tensor) for v in state["model"].values())
    student = safe_torch_load(str(tmp_path / "v" / "checkpoint.pth"), what="checkpoint")
    teacher = safe_torch_load(str(tmp_path / "s" / "checkpoint.pth"), what="checkpoint")
    for rng in (student["rng"][0], teacher["rng"]):
        assert isinstance(rng["numpy"][1], np.ndarray) and rng["numpy"][1].dtype == np.uint32
        set_rng_state(rng)
        first = (np.random.rand(), torch.rand(1))
        set_rng_state(rng)
        assert (np.random.rand(), torch.rand(1)) == first


# --- the pipeline rerun over a folder someone shared ---------------------------------------------
def test_pipeline_rerun_refuses_a_planted_teacher_checkpoint(demo_root, tmp_path, capsys):
    marker = tmp_path / "ran"
    ckpt = plant(tmp_path / "squeeze" / "checkpoint.pth", marker, model={})
    assert_refused(capsys, marker, ckpt, command="pipeline", argv=[
        "--output-dir", tmp_path / "out", "--dataset", "demo", "--data-path", demo_root, *DEMO_ROOT_SPEC, "--squeeze-dir", tmp_path / "squeeze",
        "--device", "cpu", "--no-progress", "--methods", "random_real", "--ipc", "2", "--prune-ratios", "0"])


def _jpg_image_set(demo_root, root, ipc):
    """A complete image set in recovery's layout (new000/class000_id000.jpg ...)."""
    from PIL import Image
    from lpld.recover.io import class_dir, image_name
    for c, name in enumerate(sorted(os.listdir(os.path.join(demo_root, "train")))):
        os.makedirs(class_dir(root, c))
        for k, f in enumerate(sorted(os.listdir(os.path.join(demo_root, "train", name)))[:ipc]):
            Image.open(os.path.join(demo_root, "train", name, f)).convert("RGB").save(
                os.path.join(class_dir(root, c), image_name(c, k)))
    return root


def test_pipeline_rerun_refuses_a_planted_student_checkpoint(demo_root, tmp_path, capsys, make_label_store):
    """Every step before the student is complete (given teacher, images and labels), so the rerun
    resumes the student from the checkpoint.pth found in its folder."""
    from lpld.config import parse_config
    from lpld.pipeline import PIPELINE_SCHEMA, rows, student_dir
    teacher = str(tmp_path / "teacher.pth")
    save_checkpoint(teacher, build_model(ARCH, 4))
    images = _jpg_image_set(demo_root, str(tmp_path / "images" / "random_real_ipc2"), 2)
    make_label_store(images, str(tmp_path / "labels" / "random_real_ipc2"), None, num_classes=4, batch_size=2,
                     epochs=2)
    labels = tmp_path / "labels.yaml"
    labels.write_text("common:\n  basic: {epochs: 2, batch_size: 2}\n"
                      f"validate:\n  basic: {{model: {ARCH}, val_interval: 2}}\n")
    argv = [str(a) for a in [
        "--output-dir", tmp_path / "out", "--dataset", "demo", "--data-path", demo_root, *DEMO_ROOT_SPEC, "--teacher", teacher, "--device", "cpu",
        "--no-progress", "--images-root", tmp_path / "images", "--labels-root", tmp_path / "labels",
        "--methods", "random_real", "--ipc", "2", "--prune-ratios", "0", "--label-configs",
        "relabel_and_validate/configs/demo.yaml", labels]]
    cfg = parse_config(PIPELINE_SCHEMA, argv)
    marker = tmp_path / "ran"
    ckpt = plant(os.path.join(student_dir(cfg, rows(cfg)[0], 0), "checkpoint.pth"), marker, model={})
    assert_refused(capsys, marker, ckpt, command="pipeline", argv=argv)


# --- teachers, class-BN teachers, features files, the authors' label batches ---------------------
def test_teacher_loaders_refuse_a_planted_checkpoint(demo_root, tmp_path, capsys):
    from lpld.models import read_state_dict
    from lpld.models.teacher import checkpoint_classes, load_teacher
    from lpld.utils.errors import UnsafeFileError
    marker = tmp_path / "ran"
    ckpt = plant(tmp_path / "teacher.pth", marker, model=build_model(ARCH, 4).state_dict(), classes=["a"] * 4)
    for load in (read_state_dict, checkpoint_classes, lambda p: load_teacher(ARCH, p)):
        with pytest.raises(UnsafeFileError, match=REFUSED) as err:
            load(ckpt)
        assert "\n" not in str(err.value) and ckpt in str(err.value)
    assert_refused(capsys, marker, ckpt, command="class-stats", argv=[
        "--dataset", "demo", "--data-path", demo_root, "--model", ARCH, "--no-tiny-stem", "--image-size", "16",
        "--workers", "0", "--device", "cpu", "--no-progress", "--weights", ckpt, "--output", tmp_path / "bn.pth"])


def test_diversity_refuses_a_planted_features_file(tmp_path, capsys):
    from lpld.analysis.diversity import FEATURES_FORMAT
    marker = tmp_path / "ran"
    path = plant(tmp_path / "lpld.pt", marker, format=FEATURES_FORMAT, features=torch.zeros(4, 8),
                 labels=torch.arange(4))
    assert_refused(capsys, marker, path, command="diversity", argv=["--syn", f"lpld={path}", "--device", "cpu",
                                                                     "--no-progress", "--output-dir", tmp_path / "d"])


def _authors_folder(root, batches):
    """An authors'-format label folder: epoch_0/batch_{i}.tar holding ``batches[i]``."""
    os.makedirs(os.path.join(root, "epoch_0"))
    for i, entries in enumerate(batches):
        torch.save(entries, os.path.join(root, "epoch_0", f"batch_{i}.tar"))
    with open(os.path.join(root, "sampler_indices_epoch.json"), "w") as f:
        json.dump({"0": list(range(4 * len(batches)))}, f)
    return root


def _authors_batch(bbox=(np.int64(1), np.int64(2), np.int64(5), np.int64(6)), lam=np.float64(0.75)):
    return [torch.rand(4, 4), torch.zeros(4, dtype=torch.bool), torch.arange(4).flip(0), lam, list(bbox),
            torch.randn(4, 3).half()]


def test_authors_label_batches_refuse_a_payload(tmp_path, capsys):
    from lpld.labels import open_label_store
    marker = tmp_path / "ran"
    folder = _authors_folder(str(tmp_path / "fkd"), [_authors_batch(), _authors_batch(lam=Payload(marker))])
    assert open_label_store(folder).verify() == [1]  # what check-labels reports (and --repair regenerates)
    assert_refused(capsys, marker, os.path.join(folder, "epoch_0", "batch_1.tar"), command="convert-labels",
                   argv=["--src", folder, "--dst", tmp_path / "ours", "--to", "ours"])


def _numpy1_names(obj) -> bytes:
    """``obj`` saved as numpy 1 saves it (``numpy.core.multiarray``, the module numpy 2 renamed to
    ``numpy._core``): the authors' files and checkpoints written before numpy 2."""
    buf = io.BytesIO()
    torch.save(obj, buf, _use_new_zipfile_serialization=False)  # a plain pickle stream: names are bytes
    return buf.getvalue().replace(b"numpy._core.multiarray", b"numpy.core.multiarray")


def test_authors_numpy_scalars_load_whichever_numpy_wrote_them(tmp_path):
    from lpld.labels import open_label_store
    folder = _authors_folder(str(tmp_path / "fkd"), [_authors_batch(), _authors_batch()])
    with open(os.path.join(folder, "epoch_0", "batch_1.tar"), "wb") as f:
        f.write(_numpy1_names(_authors_batch(bbox=(np.int64(0), np.int64(1), np.int64(3), np.int64(4)))))
    store = open_label_store(folder)
    assert store.read(0).mix_bbox == (1, 2, 5, 6) and store.read(0).mix_lam == 0.75
    assert store.read(1).mix_bbox == (0, 1, 3, 4)


def test_rng_state_of_numpy1_checkpoints_loads_and_object_arrays_do_not(tmp_path):
    from lpld.utils.errors import UnsafeFileError
    from lpld.utils.safe_load import safe_torch_load
    state = np.random.get_state()
    old = tmp_path / "old.pth"
    old.write_bytes(_numpy1_names({"rng": {"numpy": state}}))
    back = safe_torch_load(str(old), what="checkpoint")["rng"]["numpy"]
    assert back[0] == state[0] and np.array_equal(back[1], state[1]) and back[1].dtype == np.uint32
    # numpy arrays are allowed as numbers only: an object array can hold any Python object
    torch.save({"a": np.array([1, 2], dtype=object)}, str(tmp_path / "objects.pth"))
    with pytest.raises(UnsafeFileError, match=REFUSED):
        safe_torch_load(str(tmp_path / "objects.pth"), what="checkpoint")
