"""Never silently wrong: artifacts bound to their inputs by content, damaged stores detected and
repaired, second writers refused, full disks and bad inputs reported before any work, one line
per input error (and a traceback for bugs). Each test reproduces a way the tool used to finish
with exit 0 and a wrong result."""
from __future__ import annotations

import errno
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from conftest import read_tree
import torch
from PIL import Image

from lpld.labels import convert, open_label_store
from lpld.models import build_model, save_checkpoint
from lpld.relabel import run_relabel

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def images(demo_root, tmp_path):
    """A private copy of the demo training images (48 images, 4 classes, 16 px) and a teacher."""
    train = tmp_path / "images"
    shutil.copytree(os.path.join(demo_root, "train"), train)
    torch.manual_seed(0)
    teacher = str(tmp_path / "teacher.pth")
    save_checkpoint(teacher, build_model("resnet18", 4, tiny_stem=True))
    return {"train": str(train), "val": os.path.join(demo_root, "val"), "teacher": teacher, "tmp": tmp_path}


def _relabel(images, out, **over):
    cfg = {"dataset": "demo", "train_dir": images["train"], "teacher_ckpt": images["teacher"], "tiny_stem": True,
           "batch_size": 8, "epochs": 1, "input_size": 16, "mix_type": "cutmix", "output_dir": str(out),
           "workers": 0, "progress": False, "device": "cpu", "commit_every": 2}
    cfg.update(over)
    return run_relabel(cfg)


def _validate(images, store, out, **over):
    from lpld.validate import run_validate
    cfg = dict(dataset="demo", train_dir=images["train"], label_dir=str(store), val_dir=images["val"], batch_size=8,
               epochs=1, workers=0, output_dir=str(out), progress=False, seed=0, max_steps_per_epoch=1)
    return run_validate(cfg | over)


def _files(path):
    return read_tree(path)


def _replace_image_content(train_dir):
    """New image content under the same file name (a re-run recovery, an edited image)."""
    first = os.path.join(train_dir, "class00", sorted(os.listdir(os.path.join(train_dir, "class00")))[0])
    Image.fromarray(np.full((16, 16, 3), 7, np.uint8)).save(first)
    return first


# --- labels are bound to their images and teacher by content ----------------------------------------
def test_new_images_under_the_same_names_are_refused_by_relabel_validate_and_check(images):
    store = _relabel(images, images["tmp"] / "labels")
    _replace_image_content(images["train"])
    with pytest.raises(ValueError, match=r"images mismatch: .*sha256 [0-9a-f]{16}.* sha256 [0-9a-f]{16}"):
        _relabel(images, store)  # was: "(complete)" and the stale labels kept
    with pytest.raises(ValueError, match="images mismatch"):
        _validate(images, store, images["tmp"] / "student")  # was: trained on stale labels
    converted = convert(store, str(images["tmp"] / "converted"), to="authors", progress=False)
    with pytest.raises(ValueError, match="images mismatch"):  # the binding survives a conversion
        _validate(images, converted, images["tmp"] / "student2")
    from lpld.relabel.cli import main_check
    with pytest.raises(ValueError, match="images mismatch"):
        main_check(["--store", store, "--train-dir", images["train"], "--teacher-ckpt", images["teacher"]])


def test_a_retrained_teacher_under_the_same_name_is_refused(images):
    store = _relabel(images, images["tmp"] / "labels", stop_after=3)
    torch.manual_seed(1)
    save_checkpoint(images["teacher"], build_model("resnet18", 4, tiny_stem=True))  # retrained, same file
    with pytest.raises(ValueError, match=r"teacher mismatch: .*sha256 [0-9a-f]{16}.*teacher\.pth has sha256"):
        _relabel(images, store)
    from lpld.relabel.cli import main_check
    with pytest.raises(ValueError, match="teacher mismatch"):
        main_check(["--store", store, "--train-dir", images["train"], "--teacher-ckpt", images["teacher"]])


def test_stores_without_content_hashes_still_load_with_one_warning(images, capsys):
    """The authors' releases (and older stores) carry no hashes: they load; the check is skipped."""
    store = _relabel(images, images["tmp"] / "theirs", format="authors")
    meta = os.path.join(store, "lpld_manifest.json")
    os.remove(meta)  # the authors' release has no lpld_manifest.json
    os.remove(os.path.join(store, "lpld_checksums.tsv"))
    capsys.readouterr()
    open_label_store(store)
    open_label_store(store)
    err = capsys.readouterr().err
    assert err.count("records no content hashes") == 1


# --- a damaged store is an error, and is repaired exactly ------------------------------------------
def test_truncated_logits_are_an_error_not_zeros_and_repair_restores_the_bytes(images):
    ref = _relabel(images, images["tmp"] / "ref")
    store = _relabel(images, images["tmp"] / "labels")
    logits = os.path.join(store, "logits.npy")
    size = os.path.getsize(logits)
    with open(logits, "r+b") as f:
        f.truncate(size // 2)
    with pytest.raises(ValueError, match=r"logits.npy is .* bytes but its shape needs .*truncated"):
        _relabel(images, store)  # was: zero-filled back to size and reported complete
    assert os.path.getsize(logits) == size // 2  # not grown back
    with pytest.raises(ValueError, match="truncated"):
        _validate(images, store, images["tmp"] / "student")
    from lpld.relabel.cli import main_check
    main_check(["--store", store, "--train-dir", images["train"], "--teacher-ckpt", images["teacher"], "--repair"])
    assert _files(store) == _files(ref)


def test_zeroed_batches_fail_their_checksum_on_resume_read_and_check(images):
    ref = _relabel(images, images["tmp"] / "ref")
    store = _relabel(images, images["tmp"] / "labels")
    arr = np.load(os.path.join(store, "logits.npy"), mmap_mode="r+")
    arr[3] = 0  # a page lost by the filesystem
    arr.flush()
    del arr
    with pytest.raises(ValueError, match=r"batch 3 does not match its checksum"):
        open_label_store(store).read(3)
    with pytest.raises(ValueError, match=r"\(batches 3\)"):
        _relabel(images, store)
    from lpld.relabel.cli import main_check
    assert main_check(["--store", store]) == 1
    main_check(["--store", store, "--train-dir", images["train"], "--teacher-ckpt", images["teacher"], "--repair"])
    assert main_check(["--store", store]) == 0
    assert _files(store) == _files(ref)


def test_authors_store_missing_a_batch_file_is_named_and_not_converted(images):
    ref = _relabel(images, images["tmp"] / "ref", format="authors")
    store = _relabel(images, images["tmp"] / "labels", format="authors")
    os.remove(os.path.join(store, "epoch_0", "batch_2.tar"))
    with pytest.raises(ValueError, match=r"missing 1 batch file.*epoch_0/batch_2.tar"):
        open_label_store(store)  # was: read as a 2-batch store, blamed on the prune ratio
    with pytest.raises(ValueError, match="epoch_0/batch_2.tar"):
        convert(store, str(images["tmp"] / "copy"), to="ours", progress=False)  # was: copied 2 of 6 batches
    assert not os.path.exists(images["tmp"] / "copy")
    from lpld.relabel.cli import main_check
    main_check(["--store", store, "--train-dir", images["train"], "--teacher-ckpt", images["teacher"], "--repair"])
    assert _files(store) == _files(ref)
    # the last file missing: fewer batches than planned is named too, and not converted
    os.remove(os.path.join(store, "epoch_0", "batch_5.tar"))
    with pytest.raises(ValueError, match=r"5 of the 6 planned batches.*batch_5.tar"):
        convert(store, str(images["tmp"] / "copy"), to="ours", progress=False)
    with pytest.raises(ValueError, match="incomplete"):
        _validate(images, store, images["tmp"] / "student")


def test_a_damaged_authors_batch_file_fails_its_checksum(images):
    store = _relabel(images, images["tmp"] / "labels", format="authors")
    with open(os.path.join(store, "epoch_0", "batch_1.tar"), "r+b") as f:
        f.seek(600)
        f.write(b"\x00" * 64)
    with pytest.raises(ValueError, match=r"batch_1.tar does not match its checksum"):
        open_label_store(store).read(1)
    with pytest.raises(ValueError, match="damaged"):
        _relabel(images, store, format="authors")


# --- one writer per output ---------------------------------------------------------------------------
def _hold_lock(path, **kwargs):
    """A second process holding the lock of ``path`` (as a running stage does)."""
    code = ("import sys, time; from lpld.utils.lock import lock_output; "
            f"lock = lock_output({str(path)!r}, 'test', **{kwargs!r}); print('held', flush=True); time.sleep(60)")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": REPO})
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_a_second_writer_is_refused_naming_the_holder(images):
    store = images["tmp"] / "labels"
    holder = _hold_lock(store, beside=True)
    try:
        with pytest.raises(RuntimeError, match=rf"being written by another process: pid {holder.pid} "):
            _relabel(images, store, overwrite=True, fkd_seed=1)  # was: deleted the store being written
        student = images["tmp"] / "student"
        student.mkdir()
        first = _relabel(images, images["tmp"] / "other")
        holder2 = _hold_lock(student)
        try:
            with pytest.raises(RuntimeError, match=f"pid {holder2.pid}"):
                _validate(images, first, student)
        finally:
            holder2.kill()
            holder2.wait()
    finally:
        holder.kill()
        holder.wait()
    # the kernel drops a killed holder's lock: the next run proceeds
    _relabel(images, store, overwrite=True)
    assert not [f for f in os.listdir(images["tmp"]) if f.endswith(".lock")]


def test_locks_are_reentrant_in_one_process_and_removed_on_release(tmp_path):
    from lpld.utils.lock import lock_output
    a = lock_output(str(tmp_path), "x")
    b = lock_output(str(tmp_path), "x")
    assert os.path.exists(tmp_path / ".lpld.lock")
    a.release()
    assert os.path.exists(tmp_path / ".lpld.lock")
    b.release()
    assert not os.path.exists(tmp_path / ".lpld.lock")


# --- a full disk is reported before any work, and as one line ---------------------------------------
def test_full_disk_fails_before_work_with_bytes_needed_and_free(images, monkeypatch):
    def no_space(fd, offset, length):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "posix_fallocate", no_space)
    with pytest.raises(OSError, match=r"not enough disk space for the label store .* needs .* bytes\).* free"):
        _relabel(images, images["tmp"] / "labels")  # was: SIGBUS half-way through
    assert not os.path.exists(images["tmp"] / "labels")  # nothing half-made left behind
    monkeypatch.undo()
    import shutil as sh
    usage = sh.disk_usage(str(images["tmp"]))
    monkeypatch.setattr(sh, "disk_usage", lambda p: usage._replace(free=1000))
    with pytest.raises(OSError, match=r"needs .*\(1,000 bytes\) are free"):
        _relabel(images, images["tmp"] / "labels", format="authors")


def test_a_checkpoint_write_on_a_full_disk_is_a_plain_enospc_and_keeps_the_old_file(tmp_path, monkeypatch):
    from lpld.utils import io as lio
    path = str(tmp_path / "checkpoint.pth")
    lio.atomic_torch_save({"a": torch.zeros(3)}, path)
    real_open = open

    class Full:
        def __init__(self, file, mode="r", *a, **k):
            self.f = real_open(file, mode, *a, **k)

        def write(self, data):
            raise OSError(errno.ENOSPC, "No space left on device", self.f.name)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.f.close()

    monkeypatch.setattr(lio, "open", Full, raising=False)
    with pytest.raises(OSError) as err:
        lio.atomic_torch_save({"a": torch.ones(3)}, path)
    assert err.value.errno == errno.ENOSPC and not isinstance(err.value, RuntimeError)
    monkeypatch.undo()
    assert torch.equal(torch.load(path)["a"], torch.zeros(3))
    assert os.listdir(tmp_path) == ["checkpoint.pth"]


# --- classes: hidden folders ignored, class lists compared before any work ---------------------------
def test_hidden_folders_are_not_classes(demo_root, tmp_path):
    from lpld.data import ImageFolder
    root = tmp_path / "train"
    shutil.copytree(os.path.join(demo_root, "train"), root)
    (root / ".ipynb_checkpoints").mkdir()
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(root / ".ipynb_checkpoints" / "x.png")
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(root / "class00" / ".hidden.png")
    data = ImageFolder(str(root))
    assert data.classes == ["class00", "class01", "class02", "class03"] and len(data) == 48


def _val_without(demo_root, tmp_path, drop=None, add=None):
    val = tmp_path / "val"
    shutil.copytree(os.path.join(demo_root, "val"), val)
    if drop:
        shutil.rmtree(val / drop)
    if add:
        shutil.copytree(val / "class00", val / add)
    return str(val)


def test_validation_classes_must_match_the_labels(images, demo_root):
    store = _relabel(images, images["tmp"] / "labels")
    missing = _val_without(demo_root, images["tmp"] / "a", drop="class01")
    with pytest.raises(ValueError, match=r"validation set .* has 3 classes but .* has 4"):
        _validate(images, store, images["tmp"] / "s1", val_dir=missing)  # was: labels shifted silently
    extra = _val_without(demo_root, images["tmp"] / "b", add="class09")
    with pytest.raises(ValueError, match="has 5 classes"):
        _validate(images, store, images["tmp"] / "s2", val_dir=extra)  # was: crash after a full epoch


def test_teacher_class_list_travels_to_the_labels_and_is_compared_by_name(images, demo_root):
    torch.manual_seed(0)
    named = str(images["tmp"] / "named.pth")
    save_checkpoint(named, build_model("resnet18", 4, tiny_stem=True),
                    classes=["class00", "class01", "class02", "class03"])
    store = _relabel(images, images["tmp"] / "labels", teacher_ckpt=named)
    assert open_label_store(store).manifest["classes"] == ["class00", "class01", "class02", "class03"]
    renamed = _val_without(demo_root, images["tmp"] / "c")
    os.rename(os.path.join(renamed, "class02"), os.path.join(renamed, "class2b"))
    with pytest.raises(ValueError, match=r"missing class02; extra class2b"):
        _validate(images, store, images["tmp"] / "s", val_dir=renamed)


def test_squeeze_refuses_split_class_mismatch_zero_epochs_and_cleans_stale_temporaries(tmp_path):
    from lpld.config import resolve
    from lpld.data import make_demo_dataset
    from lpld.squeeze import TRAIN_SCHEMA, run_teacher_training
    data = make_demo_dataset(str(tmp_path / "d"), num_classes=3, image_size=8, train_per_class=2, val_per_class=1)
    out = tmp_path / "out"

    def cfg(**kw):
        return resolve(TRAIN_SCHEMA, [("t", dict(dataset="demo", data_path=data, output_dir=str(out), epochs=1,
                                                  image_size=8, batch_size=4, workers=0, device="cpu",
                                                  progress=False, tiny_stem=True) | kw)])

    with pytest.raises(ValueError, match="--epochs must be >= 1"):
        run_teacher_training(cfg(epochs=0))  # was: an untrained teacher.pth, exit 0
    assert not os.path.exists(out / "teacher.pth")
    out.mkdir(exist_ok=True)
    stale = out / ".checkpoint.pth.abcd1234.tmp"
    stale.write_bytes(b"x" * 1000)
    shutil.rmtree(os.path.join(data, "val", "class01"))
    with pytest.raises(ValueError, match="missing class01"):
        run_teacher_training(cfg())
    shutil.copytree(os.path.join(data, "val", "class02"), os.path.join(data, "val", "class01"))
    run_teacher_training(cfg())
    assert not stale.exists()
    ckpt = torch.load(out / "teacher.pth", weights_only=True)
    assert ckpt["classes"] == ["class00", "class01", "class02"]


def test_demo_data_is_not_generated_at_a_mistyped_path(tmp_path):
    from lpld.data import build_dataset
    with pytest.raises(FileNotFoundError, match="no demo dataset"):
        build_dataset("demo", str(tmp_path / "typo"), "train")
    assert not os.path.exists(tmp_path / "typo")


# --- corrupt images are named up front ----------------------------------------------------------------
def test_corrupt_images_are_all_named_before_any_work(images):
    bad = []
    for c in ("class01", "class03"):
        folder = os.path.join(images["train"], c)
        path = os.path.join(folder, sorted(os.listdir(folder))[2])
        data = open(path, "rb").read()
        with open(path, "wb") as f:
            f.write(data[: len(data) // 2])
        bad.append(path)
    with pytest.raises(ValueError, match="2 image file") as err:
        _relabel(images, images["tmp"] / "labels")
    assert all(p in str(err.value) for p in bad)
    assert not os.path.exists(images["tmp"] / "labels")


# --- the command line: one line for input errors, a traceback for bugs --------------------------------
def _cli(*args, env=None):
    return subprocess.run([sys.executable, "-m", "lpld.cli", *args], capture_output=True, text=True, cwd=REPO,
                          env={**os.environ, "PYTHONPATH": REPO, **(env or {})}, timeout=300)


def test_cli_reports_input_errors_in_one_line_and_bugs_with_a_traceback(tmp_path):
    from lpld.cli import run_friendly

    def input_error():
        from lpld.utils.errors import UnreadableImageError
        raise UnreadableImageError("cannot read image x.jpg")

    def bug():
        raise ValueError("operands could not be broadcast together")

    with pytest.raises(SystemExit) as code:
        run_friendly("t", input_error)
    assert code.value.code == 2
    with pytest.raises(ValueError, match="broadcast"):  # was: hidden behind a one-line message
        run_friendly("t", bug)

    def full():
        raise OSError(errno.ENOSPC, "No space left on device", "/x/checkpoint.pth")

    with pytest.raises(SystemExit):
        run_friendly("t", full)
    if not torch.cuda.is_available():  # was: a RuntimeError traceback
        proc = _cli("recover", "--device", "cuda", "--teacher", str(tmp_path / "t.pth"), "--output-dir", str(tmp_path))
        assert proc.returncode == 2 and "CUDA is not available" in proc.stderr
        assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def test_cli_full_disk_message_is_one_line(capsys):
    from lpld.cli import run_friendly

    def full():
        raise OSError(errno.ENOSPC, "No space left on device", "/x/checkpoint.pth")

    with pytest.raises(SystemExit):
        run_friendly("validate", full)
    err = capsys.readouterr().err.strip()
    assert err.startswith("validate: error: the disk is full while writing /x/checkpoint.pth") and "\n" not in err


# --- metrics are not duplicated by a resumed run -------------------------------------------------------
def test_metrics_log_drops_redone_epochs(tmp_path):
    from lpld.utils.metrics import MetricsLog
    log = MetricsLog(str(tmp_path / "metrics"))
    for e in (1, 2, 3):
        log.append({"epoch": e, "loss": float(e)})
    resumed = MetricsLog(str(tmp_path / "metrics"))  # killed after logging epoch 3, checkpoint at 2
    resumed.append({"epoch": 3, "loss": 3.5})
    resumed.append({"epoch": 4, "loss": 4.0})
    assert [(r["epoch"], r["loss"]) for r in resumed.records()] == [(1, 1.0), (2, 2.0), (3, 3.5), (4, 4.0)]
    rows = open(tmp_path / "metrics.csv").read().splitlines()
    assert rows == ["epoch,loss", "1,1.0", "2,2.0", "3,3.5", "4,4.0"]


# --- content hashes ------------------------------------------------------------------------------------
def test_state_dict_hash_depends_on_tensors_only(tmp_path):
    from lpld.models import checkpoint_sha256
    from lpld.utils.fingerprint import state_dict_sha256
    torch.manual_seed(0)
    model = build_model("resnet18", 4)
    save_checkpoint(str(tmp_path / "a.pth"), model)
    torch.save({"state_dict": {"module." + k: v for k, v in model.state_dict().items()}}, tmp_path / "b.pth")
    assert checkpoint_sha256(str(tmp_path / "a.pth")) == checkpoint_sha256(str(tmp_path / "b.pth"))
    sd = model.state_dict()
    sd["fc.bias"] = sd["fc.bias"].clone()
    sd["fc.bias"][0] += 1e-6
    assert state_dict_sha256(sd) != state_dict_sha256(model.state_dict())
    sd2 = dict(model.state_dict())
    sd2["fc.bias"] = sd2["fc.bias"].double()
    assert state_dict_sha256(sd2) != state_dict_sha256(model.state_dict())


def test_image_hash_depends_on_bytes_names_and_order(demo_root, tmp_path):
    from lpld.data import ImageFolder
    from lpld.utils.fingerprint import scan_images
    root = tmp_path / "t"
    shutil.copytree(os.path.join(demo_root, "train"), root)
    data = ImageFolder(str(root))
    paths = [p for p, _ in data.samples]
    base = scan_images(paths, str(root))
    assert base.count == 48 and not base.bad
    assert scan_images(paths, str(root), workers=1).sha256 == base.sha256
    assert scan_images(paths[::-1], str(root)).sha256 != base.sha256
    moved = tmp_path / "elsewhere"
    shutil.copytree(root, moved)
    assert scan_images([str(moved / os.path.relpath(p, root)) for p in paths], str(moved)).sha256 == base.sha256
    with open(paths[5], "ab") as f:
        f.write(b"\0")
    assert scan_images(paths, str(root)).sha256 != base.sha256
