"""Device-side running sums for the hot loops, and a metrics log written as both CSV and JSON lines."""
from __future__ import annotations

import csv
import json
import os
from typing import Any

import torch


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
    ``<stem>.jsonl``. Reopening appends, so a resumed run keeps its history."""

    def __init__(self, stem: str) -> None:
        os.makedirs(os.path.dirname(os.path.abspath(stem)), exist_ok=True)
        self.csv_path, self.jsonl_path = stem + ".csv", stem + ".jsonl"

    def append(self, record: dict[str, Any]) -> None:
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
        with open(self.jsonl_path) as f:
            return [json.loads(line) for line in f if line.strip()]
