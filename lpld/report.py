"""``lpld report RUN_DIR...``: the results of finished students, aggregated over seeds.

Every ``final.json`` under the given folders is one student. Students that differ only in their seed
form one row: top-1 / top-5 as mean ± std over the seeds (sample standard deviation, ddof = 1; "n"
seeds shown; one seed has no std), the label storage actually on disk beside the full store's, the
actual compression beside the nominal one (a hard-label student stores no label: 0 bytes, both shown
as ∞), the label plan (soft, hard, HALD's S1..S8 ...), and ``small_pool`` where the pruned label pool holds
fewer batches than one epoch needs (the student then sees the same few views again and again, so the
row measures that degenerate regime rather than the nominal compression).

A student's row settings come from the ``row.json`` the pipeline writes beside it; for an older
run without one, from ``final.json`` and the folder name. Keys a ``final.json`` lacks (written
before they existed) are left empty and derived where possible (``label_bytes_store`` stands in for
``label_bytes_actual``).

Students of one row must have trained alike: the settings each records (the pipeline's ``row.json``
holds its resolved validate settings; an older run: what ``final.json`` says) are compared, seed and
output folder aside, and a difference stops the report with one line naming the row, the key and
both values -- a mean over two settings is no result.

Writes ``results.md``, ``results.csv``, ``results.json`` and ``results.png`` (top-1 vs actual label
bytes, error bars = std over seeds) into ``--output-dir``, as one unit: all four are written into a
temporary folder, a pending-list names it, and they are renamed into place with ``results.json``
last; a run killed half-way is completed (or its temporaries removed) by the next one, so a
``results.json`` is never newer than the files beside it. The output folder must be new, empty, or
ours (:mod:`lpld.utils.owner`).
"""
from __future__ import annotations

import argparse
import csv
import io
import json
import math
import os
import shutil
import statistics
import sys
import tempfile
from typing import Any, Iterable, Sequence

from .analysis import plot as plotting
from .config import compression_nominal
from .utils.errors import InputValueError
from .utils.io import atomic_json_dump, atomic_write_text, remove_stale_temporaries
from .utils.lock import lock_output
from .utils.log import get_logger
from .utils.owner import LEGACY, claim_dir

log = get_logger(__name__)

GROUP_KEYS = ("table", "dataset", "method", "ipc", "label_topk", "student", "prune_ratio", "prune_metric",
              "granularity", "label_mode", "label_plan")
COLUMNS = ("table", "dataset", "method", "ipc", "label_topk", "student", "prune_ratio", "prune_metric",
           "granularity", "label_mode", "label_plan", "n", "seeds", "top1_mean", "top1_std", "top5_mean", "top5_std",
           "compression_nominal", "compression_actual", "label_bytes_actual", "label_bytes_full",
           "pool_batches", "batches_per_epoch", "small_pool", "diversity_cosine", "diversity_mmd2_rbf")
# final.json keys that describe how a student trained (older runs record no more than these)
FINAL_SETTINGS = ("epochs", "temp_scheduler", "prune_mode", "label_plan_segments")
NOT_SETTINGS = ("seed", "output_dir")  # what may differ between the students of one row
RESULTS = ("results.md", "results.csv", "results.png", "results.json")  # renamed in this order
PENDING = ".lpld.results.pending.json"


def find_runs(roots: Iterable[str]) -> list[str]:
    """Student folders (holding final.json) under ``roots``, sorted."""
    found = []
    for root in roots:
        if not os.path.isdir(root):
            raise FileNotFoundError(f"run folder not found: {root}")
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames.sort()
            if "final.json" in filenames:
                found.append(dirpath)
    return sorted(dict.fromkeys(found))


def _load(path: str) -> dict:
    with open(path) as f:
        return json.load(f)


def read_run(folder: str) -> dict[str, Any]:
    """One student: its settings (row.json, else final.json and the folder name) and metrics."""
    final = _load(os.path.join(folder, "final.json"))
    row_file = os.path.join(folder, "row.json")
    if os.path.isfile(row_file):
        info = _load(row_file)
    else:  # an older run: what final.json says, the folder name as the method
        name = os.path.basename(folder)
        if name.startswith("seed") and name[4:].isdigit():
            name = os.path.basename(os.path.dirname(folder))
        info = {"method": name, "student": final.get("model"), "dataset": final.get("dataset"),
                "seed": final.get("seed")}
    rec = {k: info.get(k, final.get(k)) for k in GROUP_KEYS}
    rec["student"] = info.get("student") or final.get("model")
    rec["label_plan"] = rec["label_plan"] or "soft"  # students from before label plans trained soft
    rec["prune_ratio"] = float(rec["prune_ratio"] if rec["prune_ratio"] is not None else final.get("prune_ratio", 0.0))
    rec["seed"] = info.get("seed", final.get("seed"))
    rec["top1"], rec["top5"] = float(final["top1"]), float(final.get("top5", float("nan")))
    actual = final.get("label_bytes_actual", final.get("label_bytes_store"))
    full = final.get("label_bytes_full")
    rec["label_bytes_actual"] = int(actual) if actual is not None else None
    rec["label_bytes_full"] = int(full) if full is not None else None
    if rec["label_bytes_actual"] == 0:  # class labels only: nothing stored, no ratio to a full store
        rec["compression_nominal"] = None
    else:
        rec["compression_nominal"] = float(final.get("compression_nominal") or compression_nominal(rec["prune_ratio"]))
    ratio = final.get("compression_actual")
    if ratio is None and full and actual:
        ratio = full / actual
    rec["compression_actual"] = float(ratio) if ratio is not None else None
    rec["pool_batches"] = final.get("pool_batches")
    rec["batches_per_epoch"] = final.get("batches_per_epoch")
    small = final.get("small_pool")
    if small is None and rec["pool_batches"] is not None and rec["batches_per_epoch"] is not None:
        small = int(rec["pool_batches"]) < int(rec["batches_per_epoch"])
    rec["small_pool"] = small
    rec["folder"] = folder
    rec["settings"] = info.get("settings")
    rec["final_settings"] = {k: final[k] for k in FINAL_SETTINGS if k in final}
    return rec


def _describe(row: dict[str, Any]) -> str:
    return " ".join(f"{k}={row[k]}" for k in ("method", "ipc", "label_topk", "prune_ratio", "student", "prune_metric",
                                               "granularity", "label_plan") if row.get(k) not in (None, ""))


def check_same_settings(key: tuple, members: list[dict[str, Any]]) -> None:
    """The students of one row trained alike (seed and output folder aside), or one line naming
    the row, the key and both values."""
    first = members[0]
    for other in members[1:]:
        for field in ("settings", "final_settings"):
            a, b = first.get(field) or {}, other.get(field) or {}
            for k in sorted(set(a) & set(b) - set(NOT_SETTINGS)):
                if a[k] != b[k]:
                    raise InputValueError(
                        f"report: the students of row {_describe(dict(zip(GROUP_KEYS, key)))} differ in {k}: "
                        f"{a[k]!r} ({first['folder']}) vs {b[k]!r} ({other['folder']}); averaging them would mix "
                        f"two settings: rerun them alike (lpld pipeline --recompute) or report them apart")


def _mean_std(values: list[float]) -> tuple[float, float | None]:
    mean = statistics.fmean(values)
    return mean, (statistics.stdev(values) if len(values) > 1 else None)


def aggregate(runs: list[dict[str, Any]], diversity: dict | None = None) -> list[dict[str, Any]]:
    """One row per setting (every key but the seed), ordered by method, IPC, student, then label
    compression (prune ratio, top-k), whatever order the run folders were found in."""
    groups: dict[tuple, list[dict]] = {}
    for r in runs:
        groups.setdefault(tuple(r[k] for k in GROUP_KEYS), []).append(r)
    out = []
    for key, members in groups.items():
        check_same_settings(key, members)
        row = dict(zip(GROUP_KEYS, key))
        row["n"] = len(members)
        row["seeds"] = " ".join(str(m["seed"]) for m in members)
        for metric in ("top1", "top5"):
            row[f"{metric}_mean"], row[f"{metric}_std"] = _mean_std([m[metric] for m in members])
        for k in ("compression_nominal", "compression_actual", "label_bytes_actual", "label_bytes_full",
                  "pool_batches", "batches_per_epoch"):
            values = [m[k] for m in members if m[k] is not None]
            row[k] = max(values) if values else None  # the same store for every seed
        flags = [m["small_pool"] for m in members if m["small_pool"] is not None]
        row["small_pool"] = any(flags) if flags else None
        sets = (diversity or {}).get("methods", {}).get(f"{row['method']}_ipc{row['ipc']}", {})
        row["diversity_cosine"] = sets.get("cosine", {}).get("mean")
        row["diversity_mmd2_rbf"] = sets.get("mmd2_rbf", {}).get("mean")
        out.append(row)
    return sorted(out, key=_row_order)


def _row_order(row: dict[str, Any]) -> tuple:
    text = lambda k: str(row[k] if row[k] is not None else "")  # noqa: E731
    plan = row.get("label_plan") or "soft"
    return (text("table"), text("dataset"), text("method"), row["ipc"] or 0, text("student"), plan == "hard",
            float(row["prune_ratio"] or 0), row["label_topk"] or 0, plan != "soft", plan, text("prune_metric"),
            text("granularity"), text("label_mode"))


def human_bytes(n: float | None) -> str:
    if n is None:
        return "–"
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1024 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def _pm(mean: float, std: float | None) -> str:
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return "–"
    return f"{mean:.2f}" + (f" ± {std:.2f}" if std is not None else "")


def _x(value: float | None, no_labels: bool = False) -> str:
    if no_labels:
        return "∞"
    return "–" if value is None else f"{value:.3g}x"


def markdown(rows: list[dict[str, Any]], title: str | None = None) -> str:
    show_div = any(r["diversity_cosine"] is not None for r in rows)
    show_plan = any((r.get("label_plan") or "soft") != "soft" for r in rows)
    head = ["method", "IPC", "top-k", "student", "prune ratio"] + (["labels"] if show_plan else []) + [
        "top-1 (%)", "top-5 (%)", "n", "nominal", "actual", "label bytes", "full store", "pool / epoch (batches)"]
    head += ["cosine ↓", "MMD² ↓"] if show_div else []
    lines = ([f"### {title}", ""] if title else []) + ["| " + " | ".join(head) + " |",
                                                         "|" + "---|" * len(head)]
    for r in rows:
        pool = "–" if r["pool_batches"] is None else f"{r['pool_batches']} / {r['batches_per_epoch'] or '–'}"
        if r["small_pool"]:
            pool += " **small_pool**"
        plan = r.get("label_plan") or "soft"
        hard = plan == "hard"
        cells = [r["method"], str(r["ipc"] if r["ipc"] is not None else "–"),
                 "–" if hard else str(r["label_topk"] or "all"), str(r["student"] or "–"),
                 "–" if hard else f"{r['prune_ratio']:g}"] + ([plan] if show_plan else []) + [
                 _pm(r["top1_mean"], r["top1_std"]), _pm(r["top5_mean"], r["top5_std"]), str(r["n"]),
                 _x(r["compression_nominal"], hard), _x(r["compression_actual"], hard),
                 human_bytes(r["label_bytes_actual"]), human_bytes(r["label_bytes_full"]), "–" if hard else pool]
        if show_div:
            cells += ["–" if r[k] is None else f"{r[k]:.4f}" for k in ("diversity_cosine", "diversity_mmd2_rbf")]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "top-1 / top-5: mean ± std over the n student seeds (sample std). nominal: the paper's name of "
                  "the prune ratio; actual: full fp16 store bytes / bytes on disk. small_pool: the pruned pool "
                  "holds fewer batches than one epoch, so the students see the same few label views every epoch."]
    if show_plan:
        lines += ["labels: the student's label plan: soft (every epoch on the stored soft labels), hard (every epoch "
                  "on the images' class labels: no label stored, ∞), or HALD's soft/hard segments (S6: soft, hard, "
                  "soft; its label bytes are the soft store's)."]
    if show_div:
        lines += ["cosine: mean within-class cosine similarity of teacher features; MMD²: synthetic vs real "
                  "(RBF), mean over classes (lpld.analysis.diversity)."]
    return "\n".join(lines) + "\n"


def csv_text(rows: list[dict[str, Any]]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(COLUMNS), extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows({k: ("" if r.get(k) is None else r.get(k)) for k in COLUMNS} for r in rows)
    return buf.getvalue()


def _finish_pending(output_dir: str) -> None:
    """Complete the swap a killed report started: its pending-list is written only once every new
    file is complete, so the set it names is moved in as a whole."""
    pending = os.path.join(output_dir, PENDING)
    if not os.path.isfile(pending):
        return
    with open(pending) as f:
        staging = os.path.join(output_dir, json.load(f)["staging"])
    for name in RESULTS:
        if os.path.isfile(os.path.join(staging, name)):
            os.replace(os.path.join(staging, name), os.path.join(output_dir, name))
    os.remove(pending)


def write_results(output_dir: str, rows: list[dict[str, Any]], md: str, title: str | None, plot: bool) -> None:
    """``results.*`` as one unit (see the module docstring)."""
    with lock_output(output_dir, "report", key="report"):
        _finish_pending(output_dir)
        remove_stale_temporaries(output_dir, ("results",) + RESULTS)  # a killed run's temporaries
        staging = tempfile.mkdtemp(prefix=".results.", suffix=".tmp", dir=output_dir)
        try:
            atomic_write_text(os.path.join(staging, "results.csv"), csv_text(rows))
            atomic_write_text(os.path.join(staging, "results.md"), md)
            if plot:
                plotting.plot_top1_vs_bytes(rows, os.path.join(staging, "results.png"), title=title)
            atomic_json_dump(rows, os.path.join(staging, "results.json"))
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        atomic_json_dump({"staging": os.path.basename(staging)}, os.path.join(output_dir, PENDING))
        if not plot and os.path.isfile(os.path.join(output_dir, "results.png")):
            os.remove(os.path.join(output_dir, "results.png"))  # an older plot is not of this table
        _finish_pending(output_dir)
        os.rmdir(staging)


def collect_and_write(roots: Sequence[str], output_dir: str, *, runs: Sequence[str] | None = None,
                      diversity: str | None = None, title: str | None = None, plot: bool = True) -> list[dict[str, Any]]:
    """The report of every student under ``roots``, or of the student folders ``runs`` only."""
    students = [read_run(f) for f in (find_runs(roots) if runs is None else runs)]
    if not students:
        raise FileNotFoundError(f"no finished student (final.json) under {', '.join(roots)}")
    summary = _load(diversity) if diversity else None
    rows = aggregate(students, summary)
    reported = {os.path.abspath(r) for r in roots}  # e.g. the default: the first run folder, ours
    claim_dir(output_dir, "report", "report folder", accept=tuple(LEGACY),
              owned=lambda path: os.path.abspath(path) in reported and bool(find_runs([path])))
    md = markdown(rows, title)
    write_results(output_dir, rows, md, title, plot)
    log.info(md)
    log.info(f"results: {os.path.join(output_dir, 'results.md')} (.csv, .json, .png); {len(students)} students")
    return rows


def main(argv: Sequence[str] | None = None) -> list[dict[str, Any]]:
    p = argparse.ArgumentParser(prog="lpld report", description=__doc__.split("\n\n")[0])
    p.add_argument("runs", nargs="+", help="folders holding finished students (searched recursively)")
    p.add_argument("--output-dir", default=None, help="where results.* go [the first RUN_DIR]")
    p.add_argument("--diversity", default=None, help="a diversity_summary.json (lpld diversity) to join by "
                                                     "image set <method>_ipc<ipc>")
    p.add_argument("--title", default=None)
    p.add_argument("--no-plot", dest="plot", action="store_false")
    args = p.parse_args(argv)
    return collect_and_write(args.runs, args.output_dir or args.runs[0], diversity=args.diversity,
                             title=args.title, plot=args.plot)


if __name__ == "__main__":
    main(sys.argv[1:])
