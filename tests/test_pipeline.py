"""The main job end to end on a miniature demo (every stage, both methods, two compressions), and
its resumption: a second run skips every finished step and gives the same table."""
import json
import os

from lpld.data import make_demo_dataset
from lpld.pipeline import main


def _write(path, text):
    with open(path, "w") as f:
        f.write(text)
    return str(path)


def test_pipeline_runs_every_stage_and_resumes(tmp_path, capsys):
    data = make_demo_dataset(str(tmp_path / "data"), num_classes=3, image_size=32, train_per_class=16,
                             val_per_class=8, seed=3)
    fast_teacher = _write(tmp_path / "teacher.yaml", "epochs: 1\nbatch_size: 16\n")
    fast_recover = _write(tmp_path / "recover.yaml", "iterations: 3\n")
    fast_labels = _write(tmp_path / "labels.yaml", "common:\n  basic: {epochs: 2, batch_size: 2}\n"
                                                   "validate:\n  basic: {val_interval: 1}\n")
    out = str(tmp_path / "out")
    argv = ["--dataset", "demo", "--data-path", data, "--output-dir", out, "--device", "cpu", "--ipc", "2",
            "--prune-ratios", "0.0", "0.5", "--no-progress",
            "--teacher-train-configs", "squeeze/configs/demo_train.yaml", fast_teacher,
            "--recover-configs", "recover/configs/demo.yaml", fast_recover,
            "--label-configs", "relabel_and_validate/configs/demo.yaml", fast_labels]
    main(argv)
    rows = json.load(open(os.path.join(out, "results.json")))
    assert [(r["method"], r["compression"]) for r in rows] == [
        ("lpld", "1x"), ("lpld", "2x"), ("sre2l", "1x"), ("sre2l", "2x")]
    for r in rows:
        assert 0 <= r["top1"] <= 100 and r["label_bytes"] > 0
    full, half = rows[0]["label_bytes"], rows[1]["label_bytes"]
    assert half < full  # the pruned store holds only the kept half of the batches
    for method in ("lpld", "sre2l"):
        folders = sorted(os.listdir(os.path.join(out, "recover", f"{method}_ipc2")))
        assert [f for f in folders if f.startswith("new")] == ["new000", "new001", "new002"]
    table = open(os.path.join(out, "results.md")).read()
    assert "| lpld | 2x |" in table and "| sre2l | 1x |" in table
    capsys.readouterr()

    main(argv)  # everything is complete: nothing is recomputed
    log = capsys.readouterr().out
    assert "[skip] squeeze: teacher training" in log and "[skip] validate: sre2l_2x" in log
    assert "[run ] validate" not in log
    assert json.load(open(os.path.join(out, "results.json"))) == rows
