"""The orchestrator on a miniature job (3 classes, 16 px, 2 label epochs): its plan, every stage end
to end, the report, skip on rerun, and a run stopped part-way that, resumed with the same command,
gives the uninterrupted run's results exactly."""
import json
import math

import pytest

from lpld.config import parse_config
from lpld.pipeline import PIPELINE_SCHEMA, main, plan, run_step, step_done


def _write(path, text):
    with open(path, "w") as f:
        f.write(text)
    return str(path)


def _argv(tmp_path, out):
    # lr 0.01: at the demo's 0.05 a 2-epoch teacher on 36 images diverges (its logits overflow fp16)
    teacher = _write(tmp_path / "teacher.yaml", "epochs: 2\nbatch_size: 16\nimage_size: 16\nlr: 0.01\n")
    squeeze = _write(tmp_path / "squeeze.yaml", "image_size: 16\n")
    recover = _write(tmp_path / "recover.yaml", "iterations: 2\nimage_size: 16\n")
    real = _write(tmp_path / "real.yaml", "image_size: 16\n")
    labels = _write(tmp_path / "labels.yaml", "common:\n  basic: {epochs: 4, batch_size: 2}\n"
                                              "relabel:\n  basic: {input_size: 16}\n"
                                              "validate:\n  basic: {val_interval: 4, model: timm/test_resnet}\n")
    return ["--output-dir", str(out), "--device", "cpu", "--ipc", "2", "--no-progress",
            "--demo-data", "num_classes=3", "image_size=16", "train_per_class=12", "val_per_class=6", "seed=3",
            "--dataset", "demo", "--data-path", str(tmp_path / "data"), "--squeeze-dir", str(tmp_path / "squeeze"),
            "--methods", "lpld", "random_real", "--prune-ratios", "0.5", "--seeds", "0", "1",
            "--squeeze-configs", "squeeze/configs/demo.yaml", squeeze,
            "--teacher-train-configs", "squeeze/configs/demo_train.yaml", teacher,
            "--recover-configs", "recover/configs/demo.yaml", recover,
            "--random-real-configs", "recover/configs/random_real_demo.yaml", real,
            "--label-configs", "relabel_and_validate/configs/demo.yaml", labels]


def test_plan_orders_steps_and_names_rows():
    cfg = parse_config(PIPELINE_SCHEMA, ["--methods", "lpld", "rded", "--prune-ratios", "0", "0.975",
                                         "--seeds", "0", "1", "2"])
    names = [s.name for s in plan(cfg)]
    assert names[:3] == ["data/demo", "squeeze/teacher", "squeeze/class_stats"]
    assert "validate/rded_ipc10_40x/seed2" in names and names[-1] == "report"
    assert len([n for n in names if n.startswith("validate/")]) == 2 * 2 * 3
    position = {n: i for i, n in enumerate(names)}
    for step in plan(cfg):
        assert all(position[a] < position[step.name] for a in step.after), step


def test_extra_rows_add_topk_rows_to_one_method_only():
    cfg = parse_config(PIPELINE_SCHEMA, ["--methods", "lpld", "sre2l", "--prune-ratios", "0", "0.975",
                                         "--extra-rows", "lpld:0.975:2", "lpld:0.9:5", "lpld:0.975:2"])
    validate = [s.name for s in plan(cfg) if s.name.startswith("validate/")]
    assert [n for n in validate if "top" in n] == ["validate/lpld_ipc10_top2_40x/seed0",
                                                   "validate/lpld_ipc10_top5_10x/seed0"]
    assert len(validate) == 2 * 2 + 2
    for bad in (["--extra-rows", "lpld:0.9"], ["--extra-rows", "rded:0.9:2"]):
        with pytest.raises(ValueError, match="extra_rows"):
            plan(parse_config(PIPELINE_SCHEMA, ["--methods", "lpld"] + bad))


@pytest.mark.slow
def test_pipeline_runs_reports_skips_and_resumes(tmp_path, capsys):
    # demo data made once, shared by both runs (the data step itself is covered by the first run)
    full = tmp_path / "full"
    main(_argv(tmp_path, full))
    rows = json.load(open(full / "results.json"))
    assert [(r["method"], r["prune_ratio"], r["n"], r["seeds"]) for r in rows] == [
        ("lpld", 0.5, 2, "0 1"), ("random_real", 0.5, 2, "0 1")]
    assert all(r["label_bytes_actual"] > 0 for r in rows)
    finals = [json.load(open(p)) for p in sorted(full.glob("students/*/seed*/final.json"))]
    assert len(finals) == 4 and all(math.isfinite(f["val_loss"]) and math.isfinite(f["train_loss"]) for f in finals), finals
    assert (full / "results.png").stat().st_size > 1000
    assert "| random_real | 2 |" in (full / "results.md").read_text()
    capsys.readouterr()

    main(_argv(tmp_path, full))  # all done: nothing recomputed, same table
    log = capsys.readouterr().out
    assert "[skip] squeeze/teacher" in log and "[skip] validate/random_real_ipc2_2x/seed1" in log
    assert "[run ] validate" not in log and "[run ] images" not in log
    assert json.load(open(full / "results.json")) == rows

    # a run stopped after its first relabel step, resumed by the same command: same numbers (the
    # teacher is shared through --squeeze-dir: its resume is tested in test_squeeze)
    part = tmp_path / "part"
    cfg = parse_config(PIPELINE_SCHEMA, _argv(tmp_path, part))
    for step in plan(cfg):
        run_step(cfg, step.name)
        if step.name.startswith("relabel/"):
            break
    assert step_done(cfg, step.name) and not step_done(cfg, "validate/lpld_ipc2_2x/seed0")
    main(_argv(tmp_path, part))
    resumed = json.load(open(part / "results.json"))
    assert [(r["top1_mean"], r["top1_std"]) for r in resumed] == [(r["top1_mean"], r["top1_std"]) for r in rows]


def test_ignored_config_keys_are_reported_once_each(tmp_path, capsys):
    from lpld.config import stage_config
    from lpld.validate import VALIDATE_SCHEMA
    path = _write(tmp_path / "authors.yaml", "common:\n  basic: {teacher_ckpt: t.pth}\n"
                                             "validate:\n  basic: {adamw_decay: 0.01}\n  aim: {tag: x}\n")
    cfg = stage_config(VALIDATE_SCHEMA, ("common", "validate"), [path], {})
    lines = [l for l in capsys.readouterr().out.splitlines() if l.startswith("config:")]
    assert len(lines) == 3 and all(path in l for l in lines)
    assert any("'adamw_decay' is ignored" in l for l in lines) and any("validate.aim" in l for l in lines)
    assert cfg.adamw_weight_decay == 0.01  # the key that does act is untouched


def test_compression_table():
    from lpld.config import compression_name, compression_nominal
    assert [compression_name(r) for r in (0.0, 0.9, 0.95, 0.97, 0.975, 0.5)] == [
        "1x", "10x", "20x", "30x", "40x", "2x"]
    assert compression_nominal(0.97) == 30.0  # the paper's name, not 1 / 0.03
