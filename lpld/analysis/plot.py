"""Accuracy vs soft-label compression, one line per method (and IPC), written as PNG.

Reads a results file (CSV, ``#`` lines are comments; JSON list / ``{"results": [...]}``, or JSON lines) with columns
``method``, ``compression`` (``40``, ``40x``) or ``prune_ratio`` (the paper's name of the ratio,
``lpld.config.compression_nominal``: 0.975 -> 40x), ``top1``, and optionally ``ipc`` and
``label_bytes``. With ``label_bytes`` a second panel shows the label storage (MB, log scale).
``--reference`` adds published numbers as hollow markers on dashed lines. ``lpld report`` draws
its figure with :func:`plot_top1_vs_bytes` (top-1 vs bytes on disk, error bars over seeds).

    python -m lpld.analysis.plot results.csv --reference paper.csv --output accuracy_vs_compression.png
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import sys
from typing import Sequence

from ..utils.errors import InputValueError
from ..utils.io import atomic_path
from ..utils.log import get_logger

log = get_logger(__name__)


def _float(value, key: str, where: str) -> float | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, str):
        value = value.strip().rstrip("xX×")
    try:
        return float(value)
    except (TypeError, ValueError):
        raise InputValueError(f"{where}: column '{key}' must be a number; got {value!r}") from None


def compression_of(record: dict, where: str = "record") -> float:
    """The label compression factor of a record: its ``compression`` or ``1 / (1 - prune_ratio)``
    (rounded to 2 decimals, so 0.975 -> 40.0)."""
    c = _float(record.get("compression"), "compression", where)
    if c is not None:
        return c
    p = _float(record.get("prune_ratio"), "prune_ratio", where)
    if p is None:
        raise InputValueError(f"{where}: needs a 'compression' or a 'prune_ratio' column")
    if not 0 <= p < 1:
        raise InputValueError(f"{where}: prune_ratio must be in [0, 1); got {p}")
    return round(1.0 / (1.0 - p), 2)


def load_results(path: str) -> list[dict]:
    """Records of a results file, normalised to ``method, ipc, compression, top1, label_bytes``;
    rows without a top-1 (runs not finished) are skipped."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"results file not found: {path}")
    with open(path, newline="") as f:
        text = f.read()
    if path.endswith(".csv"):
        raw = list(csv.DictReader(line for line in text.splitlines() if not line.startswith("#")))
    elif path.endswith(".jsonl"):
        raw = [json.loads(line) for line in text.splitlines() if line.strip()]
    else:
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as err:
            raise InputValueError(f"{path}: not CSV (by extension) nor valid JSON: {err}") from err
        raw = obj.get("results", obj) if isinstance(obj, dict) else obj
        if not isinstance(raw, list):
            raise InputValueError(f"{path}: expected a JSON list of records or {{'results': [...]}}")
    out = []
    for i, r in enumerate(raw, 1):
        where = f"{path} record {i}"
        if not r.get("method"):
            raise InputValueError(f"{where}: column 'method' is missing or empty")
        top1 = _float(r.get("top1"), "top1", where)
        if top1 is None:
            continue
        ipc = _float(r.get("ipc"), "ipc", where)
        out.append({"method": str(r["method"]), "ipc": int(ipc) if ipc is not None else None,
                    "compression": compression_of(r, where), "top1": top1,
                    "label_bytes": _float(r.get("label_bytes"), "label_bytes", where)})
    return out


def _series(records: list[dict], split_ipc: bool) -> dict[str, list[dict]]:
    series: dict[str, list[dict]] = {}
    for r in records:
        name = r["method"] + (f" IPC{r['ipc']}" if split_ipc and r["ipc"] is not None else "")
        series.setdefault(name, []).append(r)
    return {k: sorted(v, key=lambda r: r["compression"]) for k, v in series.items()}


def _label(c: float) -> str:
    return f"{c:g}x"


def plot_results(records: list[dict], output: str, *, reference: list[dict] | None = None,
                 title: str | None = None, xscale: str = "categorical", storage: bool | None = None) -> str:
    """Write the figure to ``output`` (PNG) and return the path. ``storage=None``: add the
    label-storage panel when any record has ``label_bytes``."""
    import matplotlib  # the optional plot dependency, imported only when a figure is drawn
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    reference = reference or []
    if not records and not reference:
        raise InputValueError("nothing to plot: no record has a top1 value")
    if xscale not in ("categorical", "log"):
        raise InputValueError(f"xscale must be 'categorical' or 'log'; got {xscale!r}")
    split_ipc = len({r["ipc"] for r in records + reference}) > 1
    xs = sorted({r["compression"] for r in records + reference})
    position = {c: (i if xscale == "categorical" else c) for i, c in enumerate(xs)}
    if storage is None:
        storage = any(r["label_bytes"] for r in records + reference)
    fig, axes = plt.subplots(1, 2 if storage else 1, figsize=(11 if storage else 6, 4.2), squeeze=False)
    acc_ax = axes[0][0]
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    # one colour per method name, case-insensitively, so "LPLD (paper)" matches our "lpld"
    all_names = list(_series(records, split_ipc)) + list(_series(reference, split_ipc))
    names = list(dict.fromkeys(n.lower() for n in all_names))
    colour = {n: colours[i % len(colours)] for i, n in enumerate(names)}
    for data, dashed in ((records, False), (reference, True)):
        for name, rows in _series(data, split_ipc).items():
            x = [position[r["compression"]] for r in rows]
            style = dict(color=colour[name.lower()], linestyle="--" if dashed else "-", marker="o",
                         markerfacecolor="none" if dashed else colour[name.lower()],
                         label=name + (" (paper)" if dashed else ""))
            acc_ax.plot(x, [r["top1"] for r in rows], **style)
            if storage:
                pts = [(xx, r["label_bytes"] / 1e6) for xx, r in zip(x, rows) if r["label_bytes"]]
                if pts:
                    axes[0][1].plot([p[0] for p in pts], [p[1] for p in pts], **style)
    for ax in [a for a in axes[0]]:
        if xscale == "log":
            ax.set_xscale("log")
        ax.set_xticks([position[c] for c in xs], [_label(c) for c in xs])
        ax.set_xlabel("soft-label compression")
        ax.grid(True, alpha=0.3)
    acc_ax.set_ylabel("student top-1 (%)")
    acc_ax.set_title(title or "Top-1 vs label compression")
    acc_ax.legend(fontsize=8)
    if storage:
        axes[0][1].set_yscale("log")
        axes[0][1].set_ylabel("soft-label storage (MB)")
        axes[0][1].set_title("Label storage")
    fig.tight_layout()
    with atomic_path(output) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)
    return output


def plot_top1_vs_bytes(rows: list[dict], output: str, *, title: str | None = None) -> str:
    """``lpld report``'s figure: student top-1 (mean, error bar = std over seeds) against the label
    bytes actually on disk (log scale), one line per method / IPC / top-k / student / label plan;
    a student without stored labels (hard labels only: 0 bytes, off a log axis) is a dashed line."""
    import matplotlib  # the optional plot dependency, imported only when a figure is drawn
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series: dict[str, list[dict]] = {}
    free: list[dict] = []
    for r in rows:
        plan = r.get("label_plan") or "soft"
        if r.get("label_bytes_actual") == 0 and plan == "hard":
            free.append(r)
        elif r.get("label_bytes_actual"):
            name = f"{r['method']} IPC{r['ipc']}" + (f" top{r['label_topk']}" if r.get("label_topk") else "") + \
                (f" {r['student']}" if len({x.get('student') for x in rows}) > 1 else "") + \
                (f" {plan}" if plan != "soft" else "")
            series.setdefault(name, []).append(r)
    if not series and not free:
        raise InputValueError("nothing to plot: no row has label_bytes_actual")
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    for name, pts in series.items():
        pts = sorted(pts, key=lambda r: r["label_bytes_actual"])
        x = [r["label_bytes_actual"] / 1e6 for r in pts]
        ax.errorbar(x, [r["top1_mean"] for r in pts], yerr=[r["top1_std"] or 0.0 for r in pts], marker="o",
                    capsize=3, label=name)
        for xx, r in zip(x, pts):
            ax.annotate(f"{r['compression_nominal']:g}x" + ("*" if r.get("small_pool") else ""),
                        (xx, r["top1_mean"]), textcoords="offset points", xytext=(4, 4), fontsize=7)
    for r in free:
        ax.axhline(r["top1_mean"], linestyle="--", linewidth=1, color="gray",
                   label=f"{r['method']} IPC{r['ipc']} hard labels only (0 bytes)")
    ax.set_xscale("log")
    ax.set_xlabel("soft-label storage on disk (MB, log)")
    ax.set_ylabel("student top-1 (%), mean ± std over seeds")
    ax.set_title(title or "Top-1 vs label storage (* = small_pool)")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    with atomic_path(output) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)
    return output


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("results", help="results CSV / JSON / JSONL (method, compression or prune_ratio, "
                                        "top1[, ipc, label_bytes])")
    parser.add_argument("--reference", default=None, help="published results in the same format, drawn dashed")
    parser.add_argument("--output", default="accuracy_vs_compression.png", help="PNG to write")
    parser.add_argument("--title", default=None)
    parser.add_argument("--xscale", default="categorical", choices=("categorical", "log"))
    parser.add_argument("--storage", default=None, action=argparse.BooleanOptionalAction,
                        help="label-storage panel (default: when label_bytes are given)")
    args = parser.parse_args(argv)
    try:
        records = load_results(args.results)
        reference = load_results(args.reference) if args.reference else None
        path = plot_results(records, args.output, reference=reference, title=args.title,
                            xscale=args.xscale, storage=args.storage)
    except (ValueError, FileNotFoundError) as err:
        log.error(f"error: {err}")
        return 2
    log.info(f"wrote {path} ({len(records)} results" + (f", {len(reference)} reference points" if reference else "")
             + ")")
    return 0


if __name__ == "__main__":
    sys.exit(main())
