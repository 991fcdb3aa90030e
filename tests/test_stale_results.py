"""A result is current or it is recomputed, never silently stale.

A miniature pipeline (3 classes of 16 px, ipc 2, one method, one label ratio; seconds on a CPU) is
run once per test; then a setting of one stage is edited: the dry run names the changed step with
the key and both values, a run stops before running anything with one line saying the same, and
``--recompute`` redoes that step and the ones after it, whose records then hold the new settings.
The pipeline's report holds the plan's students only."""
import json
import os

import pytest

from lpld.cli import run_command
from lpld.pipeline import main


def _write(path, text):
    path.write_text(text)
    return str(path)


def _argv(tmp_path, *, epochs=2, iterations=2, temperature=4.0, seeds=("0",), demo_classes=3, recompute=False):
    teacher = _write(tmp_path / "teacher.yaml", f"epochs: {epochs}\nbatch_size: 16\nimage_size: 16\nlr: 0.01\n")
    squeeze = _write(tmp_path / "squeeze.yaml", "image_size: 16\n")
    recover = _write(tmp_path / "recover.yaml", f"iterations: {iterations}\nimage_size: 16\n")
    labels = _write(tmp_path / "labels.yaml", "common:\n  basic: {epochs: 2, batch_size: 2}\n"
                                              "relabel:\n  basic: {input_size: 16}\n"
                                              "validate:\n  basic: {val_interval: 2, model: timm/test_resnet, "
                                              f"temperature: {temperature}}}\n")
    return ["--output-dir", str(tmp_path / "out"), "--device", "cpu", "--ipc", "2", "--no-progress",
            "--demo-data", f"num_classes={demo_classes}", "image_size=16", "train_per_class=6", "val_per_class=2",
            "--methods", "lpld", "--prune-ratios", "0.5", "--seeds", *seeds,
            "--squeeze-configs", "squeeze/configs/demo.yaml", squeeze,
            "--teacher-train-configs", "squeeze/configs/demo_train.yaml", teacher,
            "--recover-configs", "recover/configs/demo.yaml", recover,
            "--label-configs", "relabel_and_validate/configs/demo.yaml", labels] + (["--recompute"] if recompute else [])


def _dry(tmp_path, capsys, **kw):
    capsys.readouterr()
    main(_argv(tmp_path, **kw) + ["--dry-run"])
    return {line.split()[1]: line for line in capsys.readouterr().out.splitlines()}


def _stale_error(tmp_path, capsys, **kw):
    capsys.readouterr()
    with pytest.raises(SystemExit) as exc:
        run_command("pipeline", _argv(tmp_path, **kw))
    lines = capsys.readouterr().err.strip().splitlines()
    assert exc.value.code == 2 and len(lines) == 1, lines
    return lines[0]


@pytest.fixture
def finished(tmp_path, capsys):
    rows = main(_argv(tmp_path))
    capsys.readouterr()
    return rows


STUDENT = "validate/lpld_ipc2_2x/seed0"


def test_a_finished_run_is_done_and_records_what_it_ran_with(tmp_path, capsys, finished):
    lines = _dry(tmp_path, capsys)
    assert all(line.startswith("done ") for name, line in lines.items() if name != "report"), lines
    record = json.load(open(tmp_path / "out" / "students" / "lpld_ipc2_2x" / ".lpld.seed0.step.json"))
    assert record["state"] == "done" and record["settings"]["temperature"] == 4.0
    assert "device" not in record["settings"] and "output_dir" not in record["settings"]
    assert set(record["inputs"]) == {"relabel/lpld_ipc2_2x", "images/lpld_ipc2", "val"}


def test_changed_student_settings_and_a_new_seed_never_mix(tmp_path, capsys, finished):
    # the old seed's student was trained at T=4; averaging it with a new T=2 seed as one row (n=2) was the bug
    lines = _dry(tmp_path, capsys, temperature=2.0, seeds=("0", "1"))
    assert lines[STUDENT].startswith("changed ") and "temperature: 4.0 -> 2.0" in lines[STUDENT]
    assert lines["validate/lpld_ipc2_2x/seed1"].startswith("todo ")
    assert lines["relabel/lpld_ipc2_2x"].startswith("done ")
    line = _stale_error(tmp_path, capsys, temperature=2.0, seeds=("0", "1"))
    assert STUDENT in line and "temperature: 4.0 -> 2.0" in line and "--recompute" in line
    assert not (tmp_path / "out" / "students" / "lpld_ipc2_2x" / "seed1").exists()  # nothing ran

    rows = main(_argv(tmp_path, temperature=2.0, seeds=("0", "1"), recompute=True))
    assert [(r["n"], r["seeds"]) for r in rows] == [(2, "0 1")]
    log = capsys.readouterr().out
    assert f"[redo] {STUDENT}" in log and "[skip] relabel/lpld_ipc2_2x" in log
    for seed in (0, 1):
        row = json.load(open(tmp_path / "out" / "students" / "lpld_ipc2_2x" / f"seed{seed}" / "row.json"))
        assert row["settings"]["temperature"] == 2.0
    assert all(line.startswith("done ") for name, line in _dry(tmp_path, capsys, temperature=2.0,
                                                                seeds=("0", "1")).items() if name != "report")


def test_changed_upstream_configs_are_named_and_propagate(tmp_path, capsys, finished):
    lines = _dry(tmp_path, capsys, epochs=3)
    assert lines["squeeze/teacher"].startswith("changed ") and "epochs: 2 -> 3" in lines["squeeze/teacher"]
    assert lines[STUDENT].startswith("todo ") and "after" in lines[STUDENT]

    lines = _dry(tmp_path, capsys, iterations=3)
    assert lines["squeeze/teacher"].startswith("done ")
    assert "iterations: 2 -> 3" in lines["images/lpld_ipc2"]

    lines = _dry(tmp_path, capsys, demo_classes=4)
    assert lines["data/demo"].startswith("changed ") and "demo_data" in lines["data/demo"]
    assert "data/demo" in _stale_error(tmp_path, capsys, demo_classes=4)

    # recomputing the images re-checks every later step against the new images' fingerprint
    before = json.load(open(tmp_path / "out" / "labels" / ".lpld.lpld_ipc2_2x.step.json"))
    main(_argv(tmp_path, iterations=3, recompute=True))
    log = capsys.readouterr().out
    assert "[redo] images/lpld_ipc2: iterations: 2 -> 3" in log and "[redo] relabel/lpld_ipc2_2x" in log
    assert f"[redo] {STUDENT}" in log and "[skip] squeeze/teacher" in log
    after = json.load(open(tmp_path / "out" / "labels" / ".lpld.lpld_ipc2_2x.step.json"))
    assert after["inputs"]["images/lpld_ipc2"] != before["inputs"]["images/lpld_ipc2"]


def test_outputs_without_a_record_are_used_as_they_are(tmp_path, capsys, finished):
    out = tmp_path / "out"
    for record in list(out.rglob(".lpld.*.step.json")) + list(tmp_path.glob(".lpld.*.step.json")):
        record.unlink()  # as made before records existed, or downloaded
    lines = _dry(tmp_path, capsys, temperature=2.0)
    assert lines[STUDENT] == f"done {STUDENT} (no record: external)"
    assert lines["data/demo"].startswith("done ")  # demo.json records the demo's settings itself


def test_a_recompute_killed_while_clearing_is_redone(tmp_path, capsys, finished):
    record = tmp_path / "out" / "students" / "lpld_ipc2_2x" / ".lpld.seed0.step.json"
    record.write_text(json.dumps({"version": 1, "step": STUDENT, "state": "clearing"}))  # as a kill leaves it
    assert "interrupted" in _dry(tmp_path, capsys)[STUDENT]
    assert "interrupted" in _stale_error(tmp_path, capsys)
    main(_argv(tmp_path, recompute=True))
    assert json.loads(record.read_text())["state"] == "done"


def test_a_moved_output_folder_stays_current(tmp_path, capsys, finished):
    # records hold the content of their inputs, not paths: a moved run is still done
    moved = tmp_path / "moved"
    os.rename(tmp_path / "out", moved)
    capsys.readouterr()
    main(_argv(tmp_path) + ["--output-dir", str(moved), "--dry-run"])
    lines = [line for line in capsys.readouterr().out.splitlines() if not line.endswith("report (always rewritten)")]
    assert lines and all(line.startswith("done ") for line in lines), lines


def test_the_report_leaves_out_a_seed_the_plan_no_longer_has(tmp_path, capsys):
    rows = main(_argv(tmp_path, seeds=("0", "1")))
    assert rows[0]["n"] == 2
    rows = main(_argv(tmp_path, seeds=("0",)))
    assert [(r["n"], r["seeds"]) for r in rows] == [(1, "0")]
    assert "not in this plan, left out" in capsys.readouterr().out
