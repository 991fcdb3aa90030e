"""experiments/tiny_imagenet/collect_results.py and run_step.py on FABRICATED TEST FIXTURES in a
temp dir (every number below is made up for the test; nothing here is a result)."""
from __future__ import annotations

import csv
import importlib.util
import json
import os
import sys

import pytest

from conftest import REPO

HERE = os.path.join(REPO, "experiments", "tiny_imagenet")


def _load(name):
    spec = importlib.util.spec_from_file_location(name, os.path.join(HERE, f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


collect = _load("collect_results")
run_step = _load("run_step")


def _write(path, obj, jsonl=False):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        if jsonl:
            f.write("".join(json.dumps(r) + "\n" for r in obj))
        else:
            json.dump(obj, f)


@pytest.fixture
def fixture_runs(tmp_path):
    runs = tmp_path / "runs"
    # run 1: run_info from run_step (two steps) + a MetricsLog-style JSONL (fabricated)
    r1 = runs / "lpld_ipc50_p0.975"
    _write(str(r1 / "run_info_relabel.json"), {"method": "lpld", "ipc": 50, "prune_ratio": 0.975, "step": "relabel",
                                               "label_bytes": 1234, "wall_time_s": 10.0, "exit_code": 0,
                                               "device": "FIXTURE-GPU"})
    _write(str(r1 / "run_info_validate.json"), {"method": "lpld", "ipc": 50, "prune_ratio": 0.975, "step": "validate",
                                                "wall_time_s": 20.5, "exit_code": 0, "device": "FIXTURE-GPU"})
    _write(str(r1 / "val" / "metrics.jsonl"), [{"epoch": 1, "top1": 5.0, "top5": 10.0},
                                                {"epoch": 2, "top1": 9.0, "top5": 20.0},
                                                {"epoch": 3, "top1": 8.0, "top5": 21.0}], jsonl=True)
    # run 2: no run_info, name carries the settings; a summary JSON (fabricated)
    _write(str(runs / "sre2l_ipc50_p0.0" / "final.json"), {"top1": 7.5, "top5": 15.0, "epochs": 3, "best_top1": 7.7,
                                                           "label_bytes_store": 999})
    # run 3: only a log line (fabricated) and a failed step
    r3 = runs / "nested" / "sre2l_ipc50_p0.9"
    os.makedirs(r3)
    (r3 / "step_validate.log").write_text("epoch 3 loss 1.0\nval top-1: 6.25 top-5: 12.5\n")
    _write(str(r3 / "run_info_validate.json"), {"method": "sre2l", "ipc": 50, "prune_ratio": 0.9, "exit_code": 1,
                                                "step": "validate", "wall_time_s": 3})
    return runs


def test_collect_rows(fixture_runs):
    rows = collect.collect([str(fixture_runs)])
    assert [(r["method"], r["prune_ratio"]) for r in rows] == [("lpld", 0.975), ("sre2l", 0.0), ("sre2l", 0.9)]
    lpld, full, log = rows
    assert lpld["compression"] == 40.0 and lpld["top1"] == 8.0 and lpld["top1_best"] == 9.0
    assert lpld["top5"] == 21.0 and lpld["label_bytes"] == 1234 and lpld["wall_time"] == 30.5
    assert lpld["device"] == "FIXTURE-GPU" and lpld["top1_source"] == os.path.join("val", "metrics.jsonl")
    assert full["compression"] == 1.0 and full["top1"] == 7.5 and full["ipc"] == 50 and full["epochs"] == 3
    assert full["top1_best"] == 7.7 and full["label_bytes"] == 999
    assert log["top1"] == 6.25 and log["top1_source"].endswith("(log)") and "exited 1" in log["note"]


def test_cli_writes_csv_markdown_and_the_plot_reads_it(fixture_runs, tmp_path, capsys):
    doc = tmp_path / "doc.md"
    doc.write_text("# Title\n\nprose before\n\n" + collect.BEGIN + "\nold table\n" + collect.END + "\n\nprose after\n")
    teacher = tmp_path / "teacher"
    # the squeeze log's keys (val_top1), as lpld.squeeze.train writes them
    _write(str(teacher / "metrics.jsonl"), [{"epoch": 1, "val_top1": 30.0, "epoch_seconds": 5},
                                            {"epoch": 2, "val_top1": 31.0, "epoch_seconds": 5}], jsonl=True)
    _write(str(teacher / "run_info_train.json"), {"step": "train", "wall_time_s": 100, "device": "FIXTURE-GPU"})
    out = tmp_path / "res" / "results.csv"
    rc = collect.main([str(fixture_runs), "--output", str(out), "--markdown", str(doc), "--teacher-dir", str(teacher),
                       "--reference", os.path.join(HERE, "paper_table2.csv")])
    assert rc == 0
    rows = list(csv.DictReader(open(out)))
    assert rows[0]["method"] == "lpld" and rows[0]["compression"] == "40.0" and set(collect.FIELDS) == set(rows[0])
    text = doc.read_text()
    assert "old table" not in text and "prose before" in text and "prose after" in text
    assert "| lpld | 50 | 40x | 0.975 | 8.00 | 9.00 | 21.00 | 1.2 kB | 38.4 |" in text
    assert "top-1 31.00 %" in text
    # re-running replaces the block instead of appending a second one
    assert collect.main([str(fixture_runs), "--output", str(out), "--markdown", str(doc)]) == 0
    assert doc.read_text().count(collect.BEGIN) == 1

    from lpld.analysis import plot
    recs = plot.load_results(str(out))
    assert {(r["method"], r["compression"]) for r in recs} == {("lpld", 40.0), ("sre2l", 1.0), ("sre2l", 10.0)}
    assert plot.main([str(out), "--output", str(tmp_path / "p.png")]) == 0
    assert os.path.getsize(tmp_path / "p.png") > 2000


def test_unnamed_run_is_an_error(tmp_path, capsys):
    _write(str(tmp_path / "x" / "run_info.json"), {"wall_time_s": 1})
    assert collect.main([str(tmp_path), "--output", str(tmp_path / "o.csv")]) == 2
    assert "method" in capsys.readouterr().err
    assert collect.main([str(tmp_path / "missing"), "--output", str(tmp_path / "o.csv")]) == 2


def test_run_step_records_provenance(tmp_path, capsys):
    labels = tmp_path / "labels"
    labels.mkdir()
    (labels / "a.bin").write_bytes(b"x" * 100)
    run_dir = tmp_path / "lpld_ipc50_p0.9"
    code = "print('val top1 12.5')"
    rc = run_step.main([str(run_dir), "method=lpld", "ipc=50", "prune_ratio=0.9", "step=validate",
                        f"label_dir={labels}", "--", sys.executable, "-c", code])
    assert rc == 0 and "val top1 12.5" in capsys.readouterr().out
    info = json.load(open(run_dir / "run_info_validate.json"))
    assert info["ipc"] == 50 and info["prune_ratio"] == 0.9 and info["label_bytes"] == 100
    assert info["exit_code"] == 0 and info["wall_time_s"] >= 0 and info["device"]
    assert "val top1 12.5" in (run_dir / "step_validate.log").read_text()
    row = collect.read_run(str(run_dir))
    assert row["top1"] == 12.5 and row["compression"] == 10.0
    assert run_step.main([str(tmp_path / "f"), "--", sys.executable, "-c", "raise SystemExit(3)"]) == 3
    with pytest.raises(SystemExit):
        run_step.main([str(tmp_path / "g"), "novalue", "--", "true"])


def test_fp16_checkpoint_export_and_join_roundtrip(tmp_path, capsys):
    import torch

    from lpld.models import build_model, load_weights, save_checkpoint
    fp16 = _load("fp16_checkpoint")
    torch.manual_seed(0)
    model = build_model("resnet18", 10, tiny_stem=True, class_aware=True)
    ckpt = str(tmp_path / "teacher.pth")
    save_checkpoint(ckpt, model)
    parts_dir = tmp_path / "out"
    assert fp16.main(["export", ckpt, str(parts_dir), "--part-mib", "8"]) == 0
    parts = sorted(p.name for p in parts_dir.iterdir())
    assert parts[-1] == "teacher_fp16.pth.sha256" and len(parts) >= 3  # ~22 MB in 8 MiB parts
    joined = str(tmp_path / "joined.pth")
    assert fp16.main(["join", str(parts_dir), joined]) == 0
    again = build_model("resnet18", 10, tiny_stem=True, class_aware=True)
    load_weights(again, joined)  # fp16 tensors load into the fp32 model
    a, b = model.state_dict(), again.state_dict()
    for key in a:
        assert a[key].dtype == b[key].dtype
        if a[key].is_floating_point():
            torch.testing.assert_close(a[key], b[key], rtol=1e-3, atol=1e-4)
    # out-of-range tensors and the ordinary BN statistics stay fp32
    sd = torch.load(joined, weights_only=True)["model"]
    assert sd["conv1.weight"].dtype == torch.float16 and sd["bn1.running_var"].dtype == torch.float32
    assert sd["bn1.class_running_var"].dtype == torch.float16
    big = {"w": torch.tensor([1.0, 1e6]), "v": torch.tensor([0.5])}
    state, worst, kept = fp16.to_fp16(big)
    assert kept == ["w"] and state["w"].dtype == torch.float32 and state["v"].dtype == torch.float16
    # --plain drops the class-BN buffers; a truncated part is detected
    assert fp16.main(["export", ckpt, str(tmp_path / "plain"), "--plain", "--name", "t.pth"]) == 0
    assert fp16.main(["join", str(tmp_path / "plain"), str(tmp_path / "t.pth"), "--name", "t.pth"]) == 0
    sd = torch.load(str(tmp_path / "t.pth"), weights_only=True)["model"]
    assert not any(k.endswith("class_running_mean") for k in sd)
    first = parts_dir / "teacher_fp16.pth.part-00"
    first.write_bytes(first.read_bytes()[:-10])
    assert fp16.main(["join", str(parts_dir), str(tmp_path / "bad.pth")]) == 2
    assert "sha256" in capsys.readouterr().err and not os.path.exists(tmp_path / "bad.pth")


@pytest.mark.parametrize("args,code,message", [
    ([], 1, "gpu_call.sh stage SHARD"),
    (["bogus"], 2, "unknown step"),
    (["teacher"], 2, "not staged on this machine: train-0 train-1 train-2 train-3 val"),
    (["recover", "lpld", "50", "0", "20"], 2, "no teacher"),
    (["recover", "dd", "50", "0", "20"], 2, "METHOD must be lpld or sre2l"),
    (["relval", "lpld", "50", "0.9"], 2, "no teacher"),
    (["relval", "lpld", "50"], 2, "relval needs METHOD IPC RATIO"),
])
def test_gpu_call_refuses_clearly(tmp_path, args, code, message):
    import subprocess
    env = {**os.environ, "WORK": str(tmp_path / "work"), "CARRY": str(tmp_path / "carry"),
           "OUT": str(tmp_path / "out"), "PYTHON": sys.executable}
    proc = subprocess.run(["bash", os.path.join(HERE, "gpu_call.sh"), *args], capture_output=True, text=True, env=env)
    assert proc.returncode == code, proc.stdout + proc.stderr
    assert message in proc.stdout + proc.stderr
