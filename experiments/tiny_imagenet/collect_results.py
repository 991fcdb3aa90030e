#!/usr/bin/env python
"""Gather the Tiny-ImageNet run folders into one results CSV (what lpld.analysis.plot reads) and
render the results table of docs/results_tiny_imagenet.md.

    python experiments/tiny_imagenet/collect_results.py RUNS_DIR [RUNS_DIR ...] \\
        --output experiments/tiny_imagenet/results/results.csv \\
        [--teacher-dir DIR] [--reference experiments/tiny_imagenet/paper_table2.csv] \\
        [--markdown docs/results_tiny_imagenet.md]

A *run folder* is one (method, IPC, prune ratio) relabel+validate run: a folder holding
``run_info*.json`` written by ``run_step.py`` (method, ipc, prune_ratio, label_bytes = size on disk of
the run's label store, wall_time_s, device, command, exit_code; else ``label_bytes_store`` of
``final.json``) and the metrics the student trainer wrote. Each RUNS_DIR is a run folder
or a folder of run folders (searched recursively). Without ``run_info`` the method, IPC and ratio are
read from a folder name like ``lpld_ipc50_p0.975``.

Top-1 is taken, in this order, from: a JSON summary whose name holds ``result``/``final``/``summary``
with a ``top1`` key (``lpld.validate`` writes ``final.json``); the JSON-lines metrics file with the
most ``top1`` records (final = its last record, best = its maximum); the last ``top1 ...`` number in
a ``*.log`` file. The CSV says which (``top1_source``).

With ``--markdown`` the table is written between ``<!-- BEGIN collect_results -->`` and
``<!-- END collect_results -->`` in that file (added at its end when the markers are absent); the rest
of the document is left as it is.
"""
from __future__ import annotations

import argparse
import csv
import glob
import io
import json
import os
import re
import sys

FIELDS = ["method", "ipc", "compression", "prune_ratio", "top1", "top1_best", "top5", "label_bytes",
          "wall_time", "device", "epochs", "top1_source", "run_dir", "note"]
BEGIN, END = "<!-- BEGIN collect_results -->", "<!-- END collect_results -->"
NAME_PATTERN = re.compile(r"(?P<method>[A-Za-z0-9]+)_ipc(?P<ipc>\d+)_p(?P<ratio>[0-9.]+)$")
LOG_TOP1 = re.compile(r"top-?1[^0-9\-\n]{0,20}?([0-9]+(?:\.[0-9]+)?)", re.IGNORECASE)
SUMMARY_NAME = re.compile(r"result|final|summary", re.IGNORECASE)


def _read_json(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, json.JSONDecodeError) as err:
        raise ValueError(f"cannot read {path}: {err}") from err


def _read_jsonl(path):
    records = []
    with open(path) as f:
        for lineno, line in enumerate(f, 1):
            if line.strip():
                try:
                    records.append(json.loads(line))
                except json.JSONDecodeError as err:
                    raise ValueError(f"{path}:{lineno}: not valid JSON: {err}") from err
    return records


def compression_of(prune_ratio: float) -> float:
    return round(1.0 / (1.0 - prune_ratio), 2)


def find_run_dirs(root: str) -> list[str]:
    """``root`` itself if it is a run folder, else every run folder below it."""
    if not os.path.isdir(root):
        raise FileNotFoundError(f"results folder not found: {root}")
    found = set()
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        if any(f.startswith("run_info") and f.endswith(".json") for f in filenames) or \
                NAME_PATTERN.search(os.path.basename(dirpath)):
            found.add(dirpath)
            dirnames[:] = []  # a run folder's sub-folders belong to it
    return sorted(found)


def _top(record: dict, k: int):
    """top-k of a record: ``top1`` (student) or ``val_top1`` (the teacher's squeeze log)."""
    value = record.get(f"top{k}")
    return record.get(f"val_top{k}") if value is None else value


def read_metrics(run_dir: str) -> dict:
    """top1 / top1_best / top5 / epochs / top1_source of one run folder (empty if none found)."""
    files = sorted(glob.glob(os.path.join(run_dir, "**", "*.json*"), recursive=True))
    files = [f for f in files if not os.path.basename(f).startswith(("run_info", ".")) and
             os.path.basename(f).endswith((".json", ".jsonl"))]
    for path in files:
        if path.endswith(".json") and SUMMARY_NAME.search(os.path.basename(path)):
            obj = _read_json(path)
            if isinstance(obj, dict) and _top(obj, 1) is not None:
                # lpld.validate writes final.json: top1/top5 (last epoch), best_top1, label_bytes_store
                return {"top1": _top(obj, 1), "top1_best": obj.get("best_top1", obj.get("top1_best", _top(obj, 1))),
                        "top5": _top(obj, 5), "epochs": obj.get("epochs", obj.get("epoch")),
                        "label_bytes": obj.get("label_bytes_store") or obj.get("label_bytes"),
                        "top1_source": os.path.relpath(path, run_dir)}
    best_file, best_records = None, []
    for path in files:
        if path.endswith(".jsonl"):
            recs = [r for r in _read_jsonl(path) if isinstance(r, dict) and _top(r, 1) is not None]
            if len(recs) > len(best_records):
                best_file, best_records = path, recs
    if best_records:
        last = best_records[-1]
        return {"top1": _top(last, 1), "top1_best": max(_top(r, 1) for r in best_records), "top5": _top(last, 5),
                "epochs": last.get("epoch", len(best_records)), "top1_source": os.path.relpath(best_file, run_dir),
                "epoch_seconds": sum(float(r.get("epoch_seconds") or 0) for r in best_records)}
    for path in sorted(glob.glob(os.path.join(run_dir, "**", "*.log"), recursive=True)):
        with open(path, errors="replace") as f:
            hits = LOG_TOP1.findall(f.read())
        if hits:
            return {"top1": float(hits[-1]), "top1_source": os.path.relpath(path, run_dir) + " (log)"}
    return {}


def read_run(run_dir: str) -> dict:
    """One results row."""
    info: dict = {}
    wall = 0.0
    failed = []
    for path in sorted(glob.glob(os.path.join(run_dir, "run_info*.json"))):
        part = _read_json(path)
        wall += float(part.get("wall_time_s") or 0)
        if part.get("exit_code") not in (0, None):
            failed.append(f"{part.get('step', 'step')} exited {part['exit_code']}")
        for key, value in part.items():
            if key == "label_bytes" and not value:
                continue  # a step that did not see the label folder does not erase its size
            if key == "device" and key in info:
                continue  # the first step's device names the run
            info[key] = value
    m = NAME_PATTERN.search(os.path.basename(os.path.normpath(run_dir)))
    if m:
        info.setdefault("method", m.group("method"))
        info.setdefault("ipc", int(m.group("ipc")))
        info.setdefault("prune_ratio", float(m.group("ratio")))
    if "method" not in info or "prune_ratio" not in info:
        raise ValueError(f"{run_dir}: cannot tell the method and prune ratio: no run_info*.json with "
                         f"method= and prune_ratio=, and the folder is not named like lpld_ipc50_p0.975")
    ratio = float(info["prune_ratio"])
    row = {"method": info["method"], "ipc": info.get("ipc", ""), "prune_ratio": ratio,
           "compression": compression_of(ratio), "label_bytes": info.get("label_bytes", ""),
           "wall_time": round(wall, 1) if wall else "", "device": info.get("device", ""),
           "run_dir": run_dir, "note": "; ".join(filter(None, [info.get("note", "")] + failed))}
    metrics = read_metrics(run_dir)
    if row["label_bytes"] in ("", None) and metrics.get("label_bytes"):
        row["label_bytes"] = metrics["label_bytes"]  # size on disk measured by run_step.py wins
    metrics.pop("label_bytes", None)
    row.update(metrics)
    return {k: row.get(k, "") for k in FIELDS}


def read_teacher(teacher_dir: str) -> dict:
    """Final/best top-1 of the teacher's metrics log and the wall time of its steps."""
    out = {"dir": teacher_dir}
    out.update(read_metrics(teacher_dir))
    walls = [_read_json(p) for p in sorted(glob.glob(os.path.join(teacher_dir, "run_info*.json")))]
    if walls:
        out["wall_time"] = round(sum(float(w.get("wall_time_s") or 0) for w in walls), 1)
        out["device"] = walls[0].get("device", "")
    elif out.get("epoch_seconds"):
        out["wall_time"] = round(out["epoch_seconds"], 1)  # sum of the training log's epoch times
    return out


def collect(dirs: list[str]) -> list[dict]:
    rows = [read_run(d) for root in dirs for d in find_run_dirs(root)]
    return sorted(rows, key=lambda r: (str(r["method"]), int(r["ipc"] or 0), float(r["prune_ratio"])))


def write_csv(rows: list[dict], path: str) -> None:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=FIELDS)
    writer.writeheader()
    writer.writerows(rows)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w", newline="") as f:
        f.write(buf.getvalue())
    os.replace(tmp, path)


def _mb(value) -> str:
    if value in ("", None):
        return "–"
    v = float(value)
    return f"{v / 1e6:.1f} MB" if v >= 1e5 else f"{v / 1e3:.1f} kB"


def _num(value, fmt="{:.2f}") -> str:
    return fmt.format(float(value)) if value not in ("", None) else "–"


def load_reference(path: str | None) -> dict:
    """(method, ipc, compression) -> published top-1."""
    if not path:
        return {}
    with open(path, newline="") as f:
        rows = [r for r in csv.DictReader(line for line in f if not line.startswith("#"))]
    return {(r["method"].lower(), int(r["ipc"]), float(r["compression"])): float(r["top1"]) for r in rows}


def render_markdown(rows: list[dict], teacher: dict | None = None, reference: dict | None = None) -> str:
    reference = reference or {}
    lines = []
    if teacher:
        lines.append(f"Teacher (ResNet-18, Tiny stem) on the validation set: top-1 "
                     f"{_num(teacher.get('top1'))} % (best {_num(teacher.get('top1_best'))} %), "
                     f"wall time {_num(teacher.get('wall_time'), '{:.0f}')} s on {teacher.get('device') or '–'} "
                     f"(`{teacher['dir']}`).")
        lines.append("")
    lines += ["| method | IPC | compression | prune ratio | top-1 (final) | top-1 (best) | top-5 | label storage | "
              "paper top-1 | wall time (s) | device | notes |",
              "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|"]
    for r in rows:
        key = (str(r["method"]).lower(), int(r["ipc"] or 0), float(r["compression"]))
        paper = reference.get(key)
        lines.append(f"| {r['method']} | {r['ipc']} | {float(r['compression']):g}x | {r['prune_ratio']} | "
                     f"{_num(r['top1'])} | {_num(r['top1_best'])} | {_num(r['top5'])} | {_mb(r['label_bytes'])} | "
                     f"{_num(paper, '{:.1f}') if paper is not None else '–'} | {_num(r['wall_time'], '{:.0f}')} | "
                     f"{r['device'] or '–'} | {r['note'] or ''} |")
    if not rows:
        lines.append("| (no runs collected yet) | | | | | | | | | | | |")
    return "\n".join(lines) + "\n"


def update_markdown(path: str, table: str) -> None:
    """Replace the block between the markers (append the block when they are absent)."""
    text = open(path).read() if os.path.exists(path) else ""
    block = f"{BEGIN}\n{table}{END}"
    if BEGIN in text and END in text and text.index(BEGIN) < text.index(END):
        text = text[:text.index(BEGIN)] + block + text[text.index(END) + len(END):]
    else:
        text = text + ("\n" if text and not text.endswith("\n") else "") + block + "\n"
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("dirs", nargs="+", help="run folders, or folders holding run folders")
    parser.add_argument("--output", default="experiments/tiny_imagenet/results/results.csv")
    parser.add_argument("--teacher-dir", default=None, help="squeeze output folder (metrics.jsonl, run_info*.json)")
    parser.add_argument("--reference", default=None, help="published results CSV (method, ipc, compression, top1)")
    parser.add_argument("--markdown", default=None, help="document whose results block to rewrite")
    args = parser.parse_args(argv)
    try:
        rows = collect(args.dirs)
        teacher = read_teacher(args.teacher_dir) if args.teacher_dir else None
        reference = load_reference(args.reference)
    except (ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    write_csv(rows, args.output)
    table = render_markdown(rows, teacher, reference)
    if args.markdown:
        update_markdown(args.markdown, table)
    print(table)
    print(f"wrote {args.output} ({len(rows)} runs)" + (f" and the table in {args.markdown}" if args.markdown else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
