"""No stage removes, replaces or writes into a folder that lpld did not make.

Each writer is pointed at a "foreign" folder -- the user's, holding a sentinel file (and, for the
label writers, a file of their own called manifest.json, or the authors' downloaded layout) -- and
must stop with one line naming it, the sentinel intact. An empty folder the user made may be used,
and is kept with its inode and mode (a set-group-id, group-writable shared folder stays shared)."""
import json
import os
import stat

import pytest
import torch

from lpld.cli import run_command
from lpld.models import build_model, save_checkpoint
from lpld.utils.io import atomic_dir

SENTINEL = "my_thesis.txt"


def _foreign(tmp_path, name="mine", manifest=False):
    folder = tmp_path / name
    folder.mkdir()
    (folder / SENTINEL).write_text("keep me")
    if manifest:  # a common file name: it must not make the folder look like a label store
        (folder / "manifest.json").write_text(json.dumps({"project": "someone else's"}))
    return folder


def _intact(folder, manifest=False):
    assert (folder / SENTINEL).read_text() == "keep me"
    if manifest:
        assert json.loads((folder / "manifest.json").read_text()) == {"project": "someone else's"}


def _one_line_error(capsys, command, *argv):
    capsys.readouterr()
    with pytest.raises(SystemExit) as exc:
        run_command(command, [str(a) for a in argv])
    lines = capsys.readouterr().err.strip().splitlines()
    assert exc.value.code == 2 and len(lines) == 1, lines
    assert lines[0].startswith(f"{command}: error: ")
    return lines[0]


def _refused(capsys, folder, command, *argv, manifest=False):
    """``command`` stops with one line naming ``folder``, whose content is untouched."""
    try:
        line = _one_line_error(capsys, command, *argv)
    finally:
        _intact(folder, manifest)
    assert str(folder) in line
    return line


def _shared_empty_dir(tmp_path, name):
    folder = tmp_path / name
    folder.mkdir()
    os.chmod(folder, 0o2775)  # the group-writable shared folder a lab makes for everyone
    st = os.stat(folder)
    return folder, (st.st_ino, stat.S_IMODE(st.st_mode))


def _kept(folder, before):
    st = os.stat(folder)
    assert (st.st_ino, stat.S_IMODE(st.st_mode)) == before


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    torch.manual_seed(0)
    path = str(tmp_path_factory.mktemp("teacher") / "teacher.pth")
    save_checkpoint(path, build_model("resnet18", 4, tiny_stem=True))
    return path


@pytest.fixture(scope="module")
def store(demo_root, tmp_path_factory, make_label_store):
    return make_label_store(os.path.join(demo_root, "train"), str(tmp_path_factory.mktemp("s") / "labels"), None,
                            num_classes=4, batch_size=8, epochs=1, mix_type="cutmix")


# ---- the demo dataset ----------------------------------------------------------------------------------
def test_make_demo_never_replaces_a_foreign_folder(tmp_path, capsys):
    folder = _foreign(tmp_path)
    line = _refused(capsys, folder, "make-demo", folder, "--num-classes", 2, "--train-per-class", 2,
                    "--val-per-class", 1, "--image-size", 8)
    assert "not made by lpld" in line
    assert sorted(os.listdir(folder)) == [SENTINEL]


def test_make_demo_fills_an_empty_folder_in_place(tmp_path):
    from lpld.data import make_demo_dataset
    folder, before = _shared_empty_dir(tmp_path, "shared")
    make_demo_dataset(str(folder), num_classes=2, image_size=8, train_per_class=2, val_per_class=1)
    _kept(folder, before)
    assert sorted(os.listdir(folder)) == ["demo.json", "train", "val"]


def test_pipeline_needs_dataset_with_data_path_and_keeps_the_folder(tmp_path, capsys):
    # without --dataset the pipeline used to generate the demo (its default) into the folder,
    # replacing it: `lpld pipeline --data-path /data/imagenet` deleted ImageNet
    folder = _foreign(tmp_path, "imagenet")
    small = ["--demo-data", "num_classes=2", "image_size=8", "train_per_class=2", "val_per_class=1",
             "--output-dir", tmp_path / "out", "--teacher-train-configs", tmp_path / "missing.yaml"]
    line = _refused(capsys, folder, "pipeline", "--data-path", folder, *small)
    assert "--data-path" in line and "--dataset" in line
    line = _refused(capsys, folder, "pipeline", "--dataset", "demo", "--data-path", folder, *small)
    assert "not made by lpld" in line


def test_pipeline_refuses_a_foreign_output_folder(tmp_path, capsys):
    folder = _foreign(tmp_path)
    _refused(capsys, folder, "pipeline", "--output-dir", folder, "--demo-data", "num_classes=2", "image_size=8",
             "train_per_class=2", "val_per_class=1", "--teacher-train-configs", tmp_path / "missing.yaml")
    assert sorted(os.listdir(folder)) == [SENTINEL]


# ---- image sets --------------------------------------------------------------------------------------
def test_recover_refuses_a_foreign_exp_folder(tmp_path, capsys):
    class_bn = str(tmp_path / "class_bn.pth")
    save_checkpoint(class_bn, build_model("timm/test_resnet", 4, class_aware=True))
    folder = _foreign(tmp_path)
    _refused(capsys, folder, "recover", "--teacher", class_bn, "--model", "timm/test_resnet", "--output-dir", tmp_path,
             "--exp-name", "mine", "--dataset", "demo", "--ipc", 1, "--image-size", 16, "--iterations", 1,
             "--device", "cpu", "--no-progress")
    assert sorted(os.listdir(folder)) == [SENTINEL]


def test_rded_refuses_a_foreign_exp_folder(tmp_path, demo_root, capsys):
    torch.manual_seed(0)
    plain = str(tmp_path / "plain.pth")
    save_checkpoint(plain, build_model("resnet18", 4))
    folder = _foreign(tmp_path)
    _refused(capsys, folder, "rded", "--dataset", "demo", "--data-path", demo_root, "--teacher", plain,
             "--output-dir", tmp_path, "--exp-name", "mine", "--ipc", 1, "--image-size", 16, "--factor", 2,
             "--mipc", 4, "--num-crop", 2, "--batch-size", 16, "--device", "cpu", "--no-progress")
    assert sorted(os.listdir(folder)) == [SENTINEL]


def test_random_real_refuses_a_foreign_exp_folder(tmp_path, demo_root, capsys):
    folder = _foreign(tmp_path)
    _refused(capsys, folder, "random-real", "--dataset", "demo", "--data-path", demo_root, "--ipc", 1,
             "--output-dir", tmp_path, "--exp-name", "mine", "--no-progress")
    assert sorted(os.listdir(folder)) == [SENTINEL]


# ---- label stores ---------------------------------------------------------------------------------------
def _relabel(demo_root, teacher, out, *extra):
    return ["--dataset", "demo", "--train-dir", os.path.join(demo_root, "train"), "--teacher-ckpt", teacher,
            "--tiny-stem", "--batch-size", 8, "--epochs", 1, "--input-size", 16, "--workers", 0, "--no-progress",
            "--device", "cpu", "--output-dir", out, *extra]


@pytest.mark.parametrize("fmt", ["ours", "authors"])
@pytest.mark.parametrize("overwrite", [["--overwrite"], []])
def test_relabel_never_replaces_nor_fills_a_foreign_folder(tmp_path, demo_root, teacher, capsys, fmt, overwrite):
    folder = _foreign(tmp_path, manifest=True)
    line = _refused(capsys, folder, "relabel", *_relabel(demo_root, teacher, folder, *overwrite, "--format", fmt),
                    manifest=True)
    assert "written by lpld" in line and "--overwrite" in line


def test_the_authors_downloaded_labels_are_never_overwritten(tmp_path, demo_root, teacher, capsys):
    folder = _foreign(tmp_path, "LPLD_labels")  # their release: epoch_*/batch_*.tar, no lpld manifest
    (folder / "epoch_0").mkdir()
    (folder / "epoch_0" / "batch_0.tar").write_bytes(b"their labels")
    for fmt in ("ours", "authors"):
        _refused(capsys, folder, "relabel", *_relabel(demo_root, teacher, folder, "--overwrite", "--format", fmt))
        assert (folder / "epoch_0" / "batch_0.tar").read_bytes() == b"their labels"


def test_relabel_into_an_empty_shared_folder_keeps_it(tmp_path, demo_root, teacher):
    from lpld.labels import open_label_store
    from lpld.relabel import run_relabel
    folder, before = _shared_empty_dir(tmp_path, "labels")
    run_relabel({"dataset": "demo", "train_dir": os.path.join(demo_root, "train"), "teacher_ckpt": teacher,
                 "tiny_stem": True, "batch_size": 8, "epochs": 1, "input_size": 16, "output_dir": str(folder),
                 "workers": 0, "progress": False, "device": "cpu"})
    _kept(folder, before)
    assert open_label_store(str(folder)).num_batches == 6
    assert not [n for n in os.listdir(folder) if n.startswith(".")]  # no fill marker or temporary left


def test_convert_labels_overwrite_never_replaces_a_foreign_folder(tmp_path, store, capsys):
    for to in ("ours", "authors", "lpqld"):
        folder = _foreign(tmp_path, f"mine_{to}", manifest=True)
        _refused(capsys, folder, "convert-labels", "--src", store.path, "--dst", folder, "--to", to, "--overwrite",
                 manifest=True)


def test_convert_labels_overwrite_replaces_our_own_store(tmp_path, store):
    from lpld.labels import open_label_store
    out = tmp_path / "copy"
    for _ in range(2):
        run_command("convert-labels", ["--src", store.path, "--dst", str(out), "--to", "ours", "--overwrite"])
    assert open_label_store(str(out)).num_batches == store.num_batches


# ---- students, teachers, reports -------------------------------------------------------------------------
def test_validate_refuses_a_foreign_output_folder(tmp_path, demo_root, store, capsys):
    folder = _foreign(tmp_path)
    _refused(capsys, folder, "validate", "--dataset", "demo", "--train-dir", os.path.join(demo_root, "train"),
             "--label-dir", store.path, "--val-dir", os.path.join(demo_root, "val"), "--batch-size", 8, "--epochs", 1,
             "--workers", 0, "--no-progress", "--device", "cpu", "--output-dir", folder)
    assert sorted(os.listdir(folder)) == [SENTINEL]


def test_squeeze_train_refuses_a_foreign_output_folder(tmp_path, demo_root, capsys):
    folder = _foreign(tmp_path)
    _refused(capsys, folder, "squeeze-train", "--dataset", "demo", "--data-path", demo_root, "--epochs", 1,
             "--image-size", 16, "--batch-size", 8, "--workers", 0, "--no-progress", "--device", "cpu",
             "--output-dir", folder)
    assert sorted(os.listdir(folder)) == [SENTINEL]


def test_report_refuses_a_foreign_output_folder(tmp_path, capsys):
    run = tmp_path / "runs" / "lpld_40x"
    run.mkdir(parents=True)
    (run / "final.json").write_text(json.dumps({"top1": 1.0, "model": "resnet18", "prune_ratio": 0.975}))
    folder = _foreign(tmp_path)
    _refused(capsys, folder, "report", tmp_path / "runs", "--output-dir", folder, "--no-plot")
    assert sorted(os.listdir(folder)) == [SENTINEL]
    run_command("report", [str(tmp_path / "runs"), "--no-plot"])  # default: into the run folder, ours
    assert (tmp_path / "runs" / "results.json").is_file()


# ---- the primitive ---------------------------------------------------------------------------------------
def test_atomic_dir_refuses_foreign_and_replaces_ours_in_place(tmp_path):
    from lpld.utils.owner import FILLING, ForeignFolderError
    folder = _foreign(tmp_path)
    with pytest.raises(ForeignFolderError, match="not made by lpld"):
        with atomic_dir(str(folder)) as tmp:
            open(os.path.join(tmp, "new"), "w").close()
    _intact(folder)

    ours, before = _shared_empty_dir(tmp_path, "ours")
    for content in ("one", "two"):
        with atomic_dir(str(ours), owned=lambda p: os.path.isfile(os.path.join(p, "manifest")),
                        last=("manifest",)) as tmp:
            for name in ("data", "manifest"):
                with open(os.path.join(tmp, name), "w") as f:
                    f.write(content)
    _kept(ours, before)
    assert sorted(os.listdir(ours)) == ["data", "manifest"] and (ours / "data").read_text() == "two"

    # a fill killed half-way leaves its marker: the folder is ours to redo, although its manifest is missing
    (ours / "manifest").unlink()
    (ours / FILLING).write_text("")
    with atomic_dir(str(ours), owned=lambda p: False) as tmp:
        open(os.path.join(tmp, "manifest"), "w").close()
    assert sorted(os.listdir(ours)) == ["manifest"]
