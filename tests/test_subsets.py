"""Class subsets of a dataset (``classes: 0:20``) in every stage, and the pipeline's flags for the
sizes a shorter run changes (the Tiny-ImageNet class-subset study, configs/pipeline/tiny_subset_cpu.yaml).

A subset keeps the dataset's class order and numbers its classes 0..k-1; its class names are what
every artifact records, so an artifact of one subset is refused with another."""
import json
import os
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from lpld.cli import run_command
from lpld.config import load_yaml, parse_config
from lpld.data import TinyImageNet, build_dataset, build_val_dataset, class_count, select_classes, val_transform
from lpld.pipeline import Job, main, step_settings
from lpld.pipeline.schema import PIPELINE_SCHEMA
from lpld.pipeline.stages import diversity_stage
from lpld.utils.errors import InputValueError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WNIDS = ["n05", "n01", "n04", "n02", "n03"]  # unsorted in wnids.txt: indices follow the sorted order
SORTED = sorted(WNIDS)


def _img(path, seed):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path, quality=95)


@pytest.fixture
def tiny_root(tmp_path):
    """Tiny-ImageNet's original layout: train/<wnid>/images/*.JPEG, val/images + val_annotations.txt."""
    root = tmp_path / "tiny-imagenet-200"
    root.mkdir()
    (root / "wnids.txt").write_text("\n".join(WNIDS) + "\n")
    for c, w in enumerate(WNIDS):
        for k in range(2):
            _img(str(root / "train" / w / "images" / f"{w}_{k}.JPEG"), 10 * c + k)
    lines = []
    for i, w in enumerate(["n03", "n01", "n05", "n02", "n04", "n03", "n05"]):
        _img(str(root / "val" / "images" / f"val_{i}.JPEG"), 100 + i)
        lines.append(f"val_{i}.JPEG\t{w}\t0\t0\t63\t63")
    (root / "val" / "val_annotations.txt").write_text("\n".join(lines) + "\n")
    return str(root)


def _annotations(root):
    rows = (line.split("\t") for line in open(os.path.join(root, "val", "val_annotations.txt")) if line.strip())
    return {name: wnid for name, wnid, *_ in rows}


def test_a_range_selects_those_classes_in_dataset_order_relabelled_from_zero(tiny_root):
    for spec in ("1:4", "n04,n02,2", "3,1:3"):  # written in any order: the dataset's order is kept
        train = build_dataset("tiny", tiny_root, "train", classes=spec)
        assert train.classes == SORTED[1:4] == ["n02", "n03", "n04"]
        assert sorted(set(train.targets)) == [0, 1, 2] and len(train) == 6
        assert all(os.path.basename(p).startswith(train.classes[t]) for p, t in train.samples)
    assert build_dataset("tiny", tiny_root, "train", classes=None).classes == SORTED
    assert class_count("0:20") == 20 and class_count("0:10,15,n01443537") == 12 and class_count(None) is None


def test_the_val_labels_of_a_subset_follow_val_annotations(tiny_root):
    ann = _annotations(tiny_root)
    for val in (build_dataset("tiny", tiny_root, "val", classes="2:5"),
                build_val_dataset("tiny", os.path.join(tiny_root, "val"), None, "2:5"),
                build_val_dataset("tiny", tiny_root, None, "2:5")):
        assert val.classes == ["n03", "n04", "n05"]
        assert sorted(os.path.basename(p) for p, _ in val.samples) == sorted(
            name for name, w in ann.items() if w in val.classes)
        for path, target in val.samples:
            assert val.classes[target] == ann[os.path.basename(path)]


@pytest.mark.parametrize("spec, message", [
    ("3:9", "index 5 is out of range; .* has 5 classes"),
    ("n01,n99", "'n99' is not a class of"),
    ("0:3,2", "class 2 is selected twice"),
    ("4:2", "range 4:2 is empty"),
    ("0:x", "is not a range"),
    ("0,,1", "an empty item"),
])
def test_a_wrong_subset_is_a_one_line_error(tiny_root, spec, message):
    with pytest.raises(InputValueError, match=message) as err:
        build_dataset("tiny", tiny_root, "train", classes=spec)
    assert "\n" not in str(err.value)


def test_a_malformed_subset_on_the_command_line_is_refused_before_anything_runs(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        run_command("squeeze-train", ["--dataset", "tiny", "--data-path", str(tmp_path), "--classes", "5:3"])
    err = capsys.readouterr().err.strip().splitlines()
    assert exc.value.code == 2 and "classes" in err[-1] and "5:3" in err[-1]


def test_yaml_reads_a_range_as_text_not_a_base_60_number(tmp_path):
    (tmp_path / "c.yaml").write_text("classes: 20:40\nnum_classes: 20\nlr: 0.001\nepochs: 0x10\n")
    assert load_yaml(str(tmp_path / "c.yaml")) == {"classes": "20:40", "num_classes": 20, "lr": 0.001, "epochs": 16}


def test_an_imagefolder_copy_of_tiny_imagenet_is_the_same_dataset(tiny_root, tmp_path):
    """Train and val copied to ``root/<split>/<wnid>/*``: the same classes, labels and tensors (the
    Tiny preset: no resize at 64 px, Tiny mean/std), with or without a subset."""
    copy = tmp_path / "tiny_copy"
    for split in ("train", "val"):
        for path, target in TinyImageNet(tiny_root, split).samples:
            dst = copy / split / SORTED[target] / os.path.basename(path)
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(path, dst)
    for split in ("train", "val"):
        for spec in (None, "1:3"):
            tf = val_transform(64, "tiny")
            a, b = build_dataset("tiny", tiny_root, split, tf, spec), build_dataset("tiny", str(copy), split, tf, spec)
            assert a.classes == b.classes
            by_name = {os.path.basename(p): i for i, (p, _) in enumerate(b.samples)}
            assert len(a) == len(b) == len(by_name)
            for i, (path, target) in enumerate(a.samples):
                x, y = a[i]
                x2, y2 = b[by_name[os.path.basename(path)]]
                assert y == y2 == target and torch.equal(x, x2)
    val_a = build_val_dataset("tiny", tiny_root, None, "1:3")
    val_b = build_val_dataset("tiny", str(copy), None, "1:3")
    assert val_a.classes == val_b.classes and sorted(map(os.path.basename, (p for p, _ in val_a.samples))) == \
        sorted(map(os.path.basename, (p for p, _ in val_b.samples)))


# ---- the pipeline on a subset of the demo dataset (4 classes of 16 px; seconds) --------------------
def _write(path, text):
    path.write_text(text)
    return str(path)


def _argv(tmp_path, classes, *extra):
    teacher = _write(tmp_path / "teacher.yaml", "batch_size: 16\nimage_size: 16\nlr: 0.01\n")
    squeeze = _write(tmp_path / "squeeze.yaml", "image_size: 16\n")
    recover = _write(tmp_path / "recover.yaml", "image_size: 16\n")
    labels = _write(tmp_path / "labels.yaml", "common:\n  basic: {batch_size: 2}\nrelabel:\n  basic: {input_size: 16}\n"
                                              "validate:\n  basic: {val_interval: 2, model: timm/test_resnet}\n")
    return ["--output-dir", str(tmp_path / "out"), "--device", "cpu", "--ipc", "2", "--no-progress",
            "--demo-data", "num_classes=4", "image_size=16", "train_per_class=6", "val_per_class=2",
            "--classes", classes, "--methods", "lpld", "random_real", "--prune-ratios", "0.0", "--seeds", "0",
            "--teacher-epochs", "2", "--recover-iterations", "2", "--label-epochs", "2", "--student-epochs", "2",
            "--threads", "1",
            "--squeeze-configs", "squeeze/configs/demo.yaml", squeeze,
            "--teacher-train-configs", "squeeze/configs/demo_train.yaml", teacher,
            "--recover-configs", "recover/configs/demo.yaml", recover,
            "--label-configs", "relabel_and_validate/configs/demo.yaml", labels, *extra]


def test_every_stage_of_the_pipeline_works_on_the_subset_and_binds_its_artifacts_to_it(tmp_path, capsys, one_thread):
    main(_argv(tmp_path, "1:3", "--diversity"))
    out = tmp_path / "out"
    names = json.load(open(out / "data" / "demo.json")).get("classes") or sorted(os.listdir(out / "data" / "train"))
    subset = names[1:3]
    teacher = torch.load(out / "squeeze" / "teacher_class_bn.pth", weights_only=True)
    assert teacher["classes"] == subset
    for method in ("lpld", "random_real"):
        store = json.load(open(out / "labels" / f"{method}_ipc2" / "manifest.json"))
        assert store["classes"] == subset and store["num_classes"] == 2
        student = out / "students" / f"{method}_ipc2_1x" / "seed0"
        state = torch.load(student / "model_best.pth", weights_only=True)
        state = state.get("state_dict", state.get("model", state))
        head = [v for k, v in state.items() if k.endswith("weight") and v.dim() == 2][-1]
        assert head.shape[0] == 2  # the student's classifier has the subset's size
    # the random real images are those of the subset's classes
    chosen = json.load(open(out / "images" / "random_real_ipc2" / "random_real.json"))
    assert chosen["classes"] == subset
    summary = json.load(open(out / "diversity" / "diversity_summary.json"))
    assert summary["settings"]["num_classes"] == 2

    # the 1:3 store is refused with another subset's validation classes
    with pytest.raises(SystemExit) as exc:
        run_command("validate", ["--config", os.path.join(ROOT, "relabel_and_validate/configs/demo.yaml"), "--dataset", "demo",
                                 "--train-dir", str(out / "images" / "lpld_ipc2"),
                                 "--label-dir", str(out / "labels" / "lpld_ipc2"), "--val-dir", str(out / "data"),
                                 "--classes", "2:4", "--batch-size", "2", "--epochs", "2",
                                 "--output-dir", str(tmp_path / "other"), "--device", "cpu"])
    err = capsys.readouterr().err.strip().splitlines()
    assert exc.value.code == 2 and "do not match" in err[-1] and names[3] in err[-1], err
    # and the pipeline's finished steps are not reused for another subset
    with pytest.raises(SystemExit) as exc:
        run_command("pipeline", _argv(tmp_path, "2:4", "--diversity"))
    err = capsys.readouterr().err.strip().splitlines()
    assert exc.value.code == 2 and "'1:3' -> '2:4'" in err[-1] and "classes" in err[-1], err


def test_pipeline_size_flags_reach_their_stages(tmp_path):
    cfg = parse_config(PIPELINE_SCHEMA, _argv(tmp_path, "0:2"))
    job = Job(cfg)
    settings = {step.name: step_settings(job, step)[1] for step in job}
    assert settings["squeeze/teacher"].epochs == 2 and settings["squeeze/teacher"].classes == "0:2"
    assert settings["squeeze/class_stats"].classes == "0:2"
    assert settings["images/lpld_ipc2"].iterations == 2 and settings["images/lpld_ipc2"].num_classes == 2
    assert settings["images/random_real_ipc2"].classes == "0:2"
    assert settings["relabel/lpld_ipc2"].epochs == 2 and settings["relabel/lpld_ipc2"].classes == "0:2"
    student = settings["validate/lpld_ipc2_1x/seed0"]
    assert (student.epochs, student.train_epochs, student.classes, student.num_classes) == (2, 2, "0:2", 2)
    # without the flags each stage config's own value stays
    plain = Job(parse_config(PIPELINE_SCHEMA, ["--output-dir", str(tmp_path / "plain")]))
    plain_settings = {step.name: step_settings(plain, step)[1] for step in plain}
    assert plain_settings["squeeze/teacher"].epochs == 15 and plain_settings["images/lpld_ipc10"].iterations == 20


def test_diversity_uses_the_recovery_teachers_model_settings(tmp_path):
    recover = _write(tmp_path / "r.yaml", "model: timm/resnet10t\ntiny_stem: true\nimage_size: 24\n")
    cfg = parse_config(PIPELINE_SCHEMA, ["--output-dir", str(tmp_path / "o"), "--diversity",
                                         "--recover-configs", "recover/configs/demo.yaml", recover])
    div = diversity_stage(Job(cfg))
    assert (div.model, div.tiny_stem, div.image_size) == ("timm/resnet10t", True, 24)


def test_the_teacher_can_be_unset_on_the_command_line_and_an_empty_one_is_refused(tiny_root, tmp_path, capsys):
    base = ["--config", os.path.join(ROOT, "configs/pipeline/tiny.yaml"), "--data-path", tiny_root, "--output-dir", str(tmp_path / "o")]
    capsys.readouterr()
    main(base + ["--teacher", "null", "--dry-run"])  # no authors' teacher file: squeeze trains one
    plan = capsys.readouterr().out
    assert "todo squeeze/teacher" in plan and "todo images/lpld_ipc50" in plan
    with pytest.raises(SystemExit) as exc:
        run_command("pipeline", base + ["--dry-run"])
    err = capsys.readouterr().err.strip().splitlines()
    assert exc.value.code == 2 and "resnet18_tiny_0.pth not found" in err[-1] and "--teacher null" in err[-1]
    with pytest.raises(SystemExit) as exc:
        run_command("pipeline", base + ["--teacher", "", "--dry-run"])
    err = capsys.readouterr().err.strip().splitlines()
    assert exc.value.code == 2 and "--teacher ''" in err[-1] and "--teacher null" in err[-1]


def test_tiny_config_keeps_made_sets_and_stores_under_its_output_dir(tiny_root, tmp_path):
    cfg = parse_config(PIPELINE_SCHEMA, ["--config", os.path.join(ROOT, "configs/pipeline/tiny.yaml"), "--data-path", tiny_root,
                                         "--output-dir", str(tmp_path / "o"), "--teacher", "null",
                                         "--methods", "lpld", "sre2l", "random_real"])
    job = Job(cfg)
    from lpld.pipeline import image_dir, label_dir
    assert image_dir(cfg, "lpld", 50) == os.path.abspath("recover/syn_data_LPLD/LPLD_tiny_rn18_4k_ipc50")
    for method in ("sre2l", "random_real"):
        assert image_dir(cfg, method, 50).startswith(str(tmp_path / "o"))
    for step in job.of("relabel"):
        assert label_dir(cfg, step.row).startswith(str(tmp_path / "o")) and "cutmix" not in label_dir(cfg, step.row)


def test_the_study_config_resolves_with_its_documented_reductions():
    cfg = parse_config(PIPELINE_SCHEMA, ["--config", os.path.join(ROOT, "configs/pipeline/tiny_subset_cpu.yaml"),
                                         "--data-path", "/data/tiny-imagenet-200"])
    assert (cfg.classes, cfg.ipc, cfg.seeds, cfg.threads, cfg.teacher) == ("0:20", 10, [0, 1, 2], 1, None)
    assert cfg.methods == ["lpld", "sre2l", "random_real", "rded"] and cfg.prune_ratios == [0.0, 0.9, 0.975]
    text = open(os.path.join(ROOT, "configs/pipeline/tiny_subset_cpu.yaml")).read()
    for key in ("classes", "teacher_epochs", "recover_iterations", "ipc"):  # every reduction says so at its key
        line = next(ln for ln in text.splitlines() if ln.startswith(key + ":"))
        assert "reduced" in line, line
