"""Top-k accuracy and a metrics log written as both CSV and JSON lines."""
from __future__ import annotations

import csv
import json
import os
from typing import Any

import torch


@torch.no_grad()
def topk_correct(output: torch.Tensor, target: torch.Tensor, topk: tuple[int, ...] = (1, 5)) -> list[int]:
    """Number of samples whose target is among the top-k predictions, for each k."""
    maxk = min(max(topk), output.shape[1])
    pred = output.topk(maxk, dim=1).indices
    hit = pred.eq(target.view(-1, 1))
    return [int(hit[:, :min(k, maxk)].any(dim=1).sum()) for k in topk]


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
