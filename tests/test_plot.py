"""Accuracy-vs-compression plot: reads CSV / JSON results and writes a non-empty PNG.
The numbers below are test fixtures, not results."""
from __future__ import annotations

import json

import pytest

from lpld.analysis import plot

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

FIXTURE_CSV = """method,ipc,compression,prune_ratio,top1,top5,label_bytes,wall_time
lpld,50,1,0.0,40.0,60.0,400000000,100
lpld,50,10,0.9,39.0,59.0,40000000,50
lpld,50,40,0.975,37.0,57.0,10000000,30
sre2l,50,1,0.0,38.0,58.0,400000000,100
sre2l,50,40,0.975,30.0,50.0,10000000,30
sre2l,50,20,0.95,,,,
"""


def _is_png(path):
    data = open(path, "rb").read()
    return data[:8] == PNG_MAGIC and len(data) > 2000


def test_load_results_normalises_compression(tmp_path):
    path = tmp_path / "r.json"
    path.write_text(json.dumps({"results": [
        {"method": "a", "prune_ratio": 0.975, "top1": 1.0},
        {"method": "a", "compression": "10x", "top1": 2.0, "ipc": "50"},
        {"method": "a", "prune_ratio": 0.95, "top1": None}]}))
    recs = plot.load_results(str(path))
    assert [r["compression"] for r in recs] == [40.0, 10.0]  # the unfinished run is skipped
    assert recs[1]["ipc"] == 50 and recs[0]["label_bytes"] is None


def test_load_results_errors_name_the_problem(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("method,top1\nlpld,40\n")
    with pytest.raises(ValueError, match="compression.*prune_ratio"):
        plot.load_results(str(bad))
    bad.write_text("method,compression,top1\nlpld,40,abc\n")
    with pytest.raises(ValueError, match="top1"):
        plot.load_results(str(bad))
    with pytest.raises(FileNotFoundError):
        plot.load_results(str(tmp_path / "missing.csv"))


@pytest.mark.parametrize("xscale", ["categorical", "log"])
def test_cli_writes_png_with_reference_and_storage_panel(tmp_path, xscale, capsys):
    results = tmp_path / "results.csv"
    results.write_text(FIXTURE_CSV)
    ref = tmp_path / "ref.jsonl"
    ref.write_text("\n".join(json.dumps(r) for r in [
        {"method": "lpld", "ipc": 50, "compression": 40, "top1": 38.0, "label_bytes": 11e6},
        {"method": "lpld", "ipc": 100, "compression": 40, "top1": 46.0, "label_bytes": 22e6}]))
    out = tmp_path / "plots" / "acc.png"
    assert plot.main([str(results), "--reference", str(ref), "--output", str(out), "--xscale", xscale]) == 0
    assert _is_png(out)
    assert "5 results, 2 reference points" in capsys.readouterr().out


def test_plot_without_storage(tmp_path):
    recs = [{"method": "m", "ipc": None, "compression": c, "top1": t, "label_bytes": None}
            for c, t in ((1, 10.0), (20, 9.0), (30, 8.0))]
    out = plot.plot_results(recs, str(tmp_path / "a.png"))
    assert _is_png(out)
    with pytest.raises(ValueError, match="nothing to plot"):
        plot.plot_results([], str(tmp_path / "b.png"))
