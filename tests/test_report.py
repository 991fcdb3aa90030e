"""lpld report on hand-written final.json files (every number below is made up for the test)."""
import csv
import json
import os

import pytest

from lpld.report import collect_and_write, main


def _student(root, name, final, row=None):
    d = os.path.join(root, name)
    os.makedirs(d)
    json.dump(final, open(os.path.join(d, "final.json"), "w"))
    if row is not None:
        json.dump(row, open(os.path.join(d, "row.json"), "w"))


def _row(seed, ratio=0.975, method="lpld"):
    return {"table": "t", "dataset": "demo", "method": method, "ipc": 10, "label_topk": 0,
            "prune_ratio": ratio, "student": "resnet18", "prune_metric": "random",
            "granularity": "batch_to_epoch", "label_mode": "less", "seed": seed}


def _final(top1, pool=10, bpe=10, actual=1000, full=40000):
    return {"top1": top1, "top5": top1 + 10, "label_bytes_actual": actual, "label_bytes_full": full,
            "compression_nominal": 40.0, "pool_batches": pool, "batches_per_epoch": bpe, "model": "resnet18"}


def test_seed_aggregation_mean_std_and_small_pool(tmp_path):
    root = str(tmp_path / "runs")
    for seed, top1 in enumerate([10.0, 20.0, 30.0]):
        _student(root, f"lpld_40x/seed{seed}", _final(top1), _row(seed))
    # a degenerate pool: 2 batches where an epoch needs 10
    _student(root, "sre2l_40x/seed0", _final(5.0, pool=2, actual=500), _row(0, method="sre2l"))
    rows = collect_and_write([root], str(tmp_path / "out"), plot=False)
    lpld, sre2l = rows
    assert lpld["n"] == 3 and lpld["seeds"] == "0 1 2"
    assert lpld["top1_mean"] == pytest.approx(20.0)
    assert lpld["top1_std"] == pytest.approx(10.0)  # sample std of 10, 20, 30: sqrt(200 / 2)
    assert lpld["compression_actual"] == pytest.approx(40.0) and lpld["small_pool"] is False
    assert sre2l["small_pool"] is True and sre2l["top1_std"] is None
    md = (tmp_path / "out" / "results.md").read_text()
    assert "| lpld | 10 | all | resnet18 | 0.975 | 20.00 ± 10.00 |" in md
    assert "2 / 10 **small_pool**" in md
    table = list(csv.DictReader(open(tmp_path / "out" / "results.csv")))
    assert [r["small_pool"] for r in table] == ["False", "True"]


def test_older_final_json_without_new_keys(tmp_path):
    root = str(tmp_path / "runs")
    _student(root, "sre2l_10x", {"top1": 7.5, "top5": 15.0, "prune_ratio": 0.9, "model": "resnet18",
                                 "label_bytes_store": 999, "pool_batches": 3})
    rows = main([root, "--output-dir", str(tmp_path / "out")])
    (r,) = rows
    assert (r["method"], r["compression_nominal"], r["label_bytes_actual"]) == ("sre2l_10x", 10.0, 999)
    assert r["compression_actual"] is None and r["small_pool"] is None
    assert (tmp_path / "out" / "results.png").stat().st_size > 1000


def test_no_runs_is_an_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no finished student"):
        collect_and_write([str(tmp_path)], str(tmp_path), plot=False)


# ---- students trained differently; the results as one unit ---------------------------------------------
def _trained(root, name, seed, temperature, top1):
    """A student as the pipeline leaves it: final.json and row.json with its resolved settings."""
    folder = root / name / f"seed{seed}"
    folder.mkdir(parents=True)
    (folder / "final.json").write_text(json.dumps({"top1": top1, "top5": top1, "model": "resnet18",
                                                   "prune_ratio": 0.5, "epochs": 2, "label_bytes_actual": 1000}))
    row = {"table": "t", "dataset": "demo", "method": "lpld", "ipc": 2, "label_topk": 0, "prune_ratio": 0.5,
           "student": "resnet18", "prune_metric": "random", "granularity": "batch", "label_mode": "less",
           "seed": seed, "settings": {"temperature": temperature, "seed": seed, "learning_rate": 0.1}}
    (folder / "row.json").write_text(json.dumps(row))


def test_report_refuses_to_average_students_trained_differently(tmp_path, capsys):
    _trained(tmp_path / "runs", "lpld", 0, 4.0, 10.0)
    _trained(tmp_path / "runs", "lpld", 1, 2.0, 30.0)
    with pytest.raises(ValueError) as err:
        collect_and_write([str(tmp_path / "runs")], str(tmp_path / "out"), plot=False)
    message = str(err.value)
    assert "temperature: 4.0" in message and "2.0" in message and "method=lpld" in message and "\n" not in message
    assert not (tmp_path / "out" / "results.json").exists()


def test_report_is_written_as_one_unit(tmp_path, monkeypatch):
    import lpld.analysis.plot as plot
    runs, out = tmp_path / "runs", tmp_path / "runs"
    _trained(runs, "lpld", 0, 4.0, 10.0)
    collect_and_write([str(runs)], str(out))
    first = {n: (out / n).read_bytes() for n in ("results.json", "results.md", "results.csv", "results.png")}

    _trained(runs, "lpld", 1, 4.0, 30.0)
    real = plot.plot_top1_vs_bytes

    def killed(rows, output, title=None):  # killed while drawing: after the table files were written
        open(output + ".partial", "w").close()
        raise KeyboardInterrupt
    monkeypatch.setattr(plot, "plot_top1_vs_bytes", killed)
    with pytest.raises(KeyboardInterrupt):
        collect_and_write([str(runs)], str(out))
    assert {n: (out / n).read_bytes() for n in first} == first  # all old: nothing half-new

    (out / ".results.png.k1ll3d00.tmp").write_bytes(b"left by an older lpld killed while plotting")
    monkeypatch.setattr(plot, "plot_top1_vs_bytes", real)
    rows = collect_and_write([str(runs)], str(out))
    assert rows[0]["n"] == 2 and json.loads((out / "results.json").read_text())[0]["n"] == 2
    assert "| 2 |" in (out / "results.md").read_text() and (out / "results.png").read_bytes() != first["results.png"]
    assert not [n for n in os.listdir(out) if n.endswith(".tmp") or "pending" in n]  # no temporary survives


def test_a_report_killed_while_renaming_is_completed_by_the_next_one(tmp_path, monkeypatch):
    import lpld.report as report
    runs = tmp_path / "runs"
    _trained(runs, "lpld", 0, 4.0, 10.0)
    report.collect_and_write([str(runs)], str(runs), plot=False)
    _trained(runs, "lpld", 1, 4.0, 30.0)
    calls = []
    real = os.replace

    def dies_after_one(src, dst):  # killed after the first file of the new set is in place
        if os.path.dirname(dst) == str(runs) and os.path.basename(dst) in report.RESULTS:
            calls.append(dst)
            if len(calls) == 2:
                raise KeyboardInterrupt
        return real(src, dst)
    monkeypatch.setattr(report.os, "replace", dies_after_one)
    with pytest.raises(KeyboardInterrupt):
        report.collect_and_write([str(runs)], str(runs), plot=False)
    monkeypatch.setattr(report.os, "replace", real)
    assert json.loads((runs / "results.json").read_text())[0]["n"] == 1  # results.json is renamed last
    report._finish_pending(str(runs))  # what the next report does first
    assert json.loads((runs / "results.json").read_text())[0]["n"] == 2 and "| 2 |" in (runs / "results.md").read_text()
