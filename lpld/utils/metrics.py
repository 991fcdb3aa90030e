"""Device-side running sums for the hot loops, and a metrics log written as both CSV and JSON lines."""
from __future__ import annotations

import csv
import io
import json
import os
from typing import Any

import torch
from .io import atomic_write_text


class DeviceSums:
    """Running sums kept on the training device (loss x rows, hits, rows, ...).

    Adding a device tensor or a Python number launches a kernel and never waits for the device;
    :meth:`read` is the only host synchronisation, so a training loop reads its metrics once per
    log interval instead of once per step (timm's ``train.py`` does the same)."""

    def __init__(self, names: tuple[str, ...], device: torch.device) -> None:
        self.names = names
        self.values = torch.zeros(len(names), dtype=torch.float64, device=device)

    @torch.no_grad()
    def add(self, *values) -> None:
        for i, v in enumerate(values):
            self.values[i] += v.detach().to(torch.float64) if isinstance(v, torch.Tensor) else v

    def read(self) -> dict[str, float]:
        return dict(zip(self.names, self.values.tolist()))


class MetricsLog:
    """Append-only log: ``<stem>.csv`` (one row per record, header from the first record) and
    ``<stem>.jsonl``. Reopening appends, so a resumed run keeps its history; records carrying an
    ``epoch`` are kept once: the first record a (re)opened log appends drops every earlier record of
    the same or a later epoch (left by a run that was interrupted after logging them, or by a run
    restarted from scratch), so a resumed run never duplicates rows."""

    def __init__(self, stem: str) -> None:
        os.makedirs(os.path.dirname(os.path.abspath(stem)), exist_ok=True)
        self.csv_path, self.jsonl_path = stem + ".csv", stem + ".jsonl"
        self._checked = False

    def _drop_from_epoch(self, epoch: int) -> None:
        old = self.records()
        kept = [r for r in old if not (isinstance(r.get("epoch"), int) and r["epoch"] >= epoch)]
        if len(kept) == len(old):
            return
        fields: list[str] = []
        for r in kept:
            fields += [k for k in r if k not in fields]
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=fields, extrasaction="ignore")
        if kept:
            writer.writeheader()
            writer.writerows(kept)
        atomic_write_text(self.jsonl_path, "".join(json.dumps(r) + "\n" for r in kept))
        if kept:
            atomic_write_text(self.csv_path, buffer.getvalue())
        elif os.path.exists(self.csv_path):
            os.remove(self.csv_path)

    def append(self, record: dict[str, Any]) -> None:
        if not self._checked:
            self._checked = True
            if isinstance(record.get("epoch"), int):
                self._drop_from_epoch(record["epoch"])
        new = not os.path.exists(self.csv_path)
        fields = list(record)
        if not new:
            with open(self.csv_path, newline="") as f:
                header = next(csv.reader(f), None)
            if header:
                fields = header + [k for k in record if k not in header]
        with open(self.csv_path, "a", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
            if new:
                writer.writeheader()
            writer.writerow(record)
        with open(self.jsonl_path, "a") as f:
            f.write(json.dumps(record) + "\n")

    def records(self) -> list[dict[str, Any]]:
        if not os.path.exists(self.jsonl_path):
            return []
        out = []
        with open(self.jsonl_path) as f:
            for line in f:
                try:
                    out.append(json.loads(line))
                except ValueError:
                    pass  # a line torn by a kill while it was written
        return out
