"""The Suite: the result document, the time budget, the ratios, and the two files rewritten after
every measurement; ``measure`` and ``placeholders``, the way every timed row gets into it."""
from __future__ import annotations

import json
import os
import sys
import time
import traceback

import torch

from lpld.utils.atomic import atomic_write_text

from .common import (BUDGET, DEFAULT_ORDER, ENTRY, NOT_MEASURED, NOT_REACHED, SCHEMA, SECTIONS, clean, is_number,
                     now_iso, unmeasured)
from .environment import environment, imported_optional
from .profiles import ANCHORS
from .report import render_markdown


class Suite:
    """The result document, the time budget and the writer of the two output files."""

    def __init__(self, args, profile: dict, device: torch.device, argv: list[str]) -> None:
        self.t0 = time.perf_counter()
        self.out = os.path.abspath(args.output_dir)
        os.makedirs(self.out, exist_ok=True)
        self.budget_s = args.budget_s
        self.profile, self.device = profile, device
        self.cuda = device.type == "cuda"
        self.ratios: list[tuple[dict, str, str, str, tuple[str, float] | None, str]] = []
        self.deferred: list = []  # speed measurements that run after every section
        sections = args.only or list(DEFAULT_ORDER)
        self.doc = {
            "schema": SCHEMA,
            "suite": {"mode": "cpu-smoke" if args.cpu_smoke else "gpu",
                      "command": [sys.executable, ENTRY] + argv,
                      "started": now_iso(), "finished": None, "elapsed_s": 0.0,
                      "budget_s": args.budget_s if args.budget_s is not None else "none",
                      "sections": sections, "complete": False},
            "environment": environment(device),
            "settings": profile,
            "anchors": ANCHORS,
            "sections": {name: {"status": "not run: not selected (--only)"} if name not in sections
                         else {"status": NOT_REACHED} for name in SECTIONS},
        }

    def section(self, name: str) -> dict:
        return self.doc["sections"][name]

    # -- time --
    def elapsed(self) -> float:
        return time.perf_counter() - self.t0

    def allows(self, need_s: float) -> bool:
        return self.budget_s is None or self.elapsed() + need_s <= self.budget_s

    def remaining(self) -> float | None:
        return None if self.budget_s is None else max(0.0, self.budget_s - self.elapsed())

    # -- ratios --
    def ratio(self, where: dict, name: str, numerator: str, denominator: str, goal: tuple[str, float] | None = None,
              unit: str = "x"):
        """Declare ``where[name]`` = value at ``numerator`` / value at ``denominator`` (JSON pointers),
        recomputed at every save so it always matches the numbers it divides. ``unit``: "x" (a
        speed ratio) or "share" (a fraction, printed as a percentage)."""
        self.ratios.append((where, name, numerator, denominator, goal, unit))

    def _refresh_ratios(self) -> None:
        for where, name, num, den, goal, unit in self.ratios:
            where[name] = self._ratio_entry(num, den, goal, unit)

    def _ratio_entry(self, num: str, den: str, goal: tuple[str, float] | None, unit: str) -> dict:
        entry = {"numerator": num, "denominator": den, "unit": unit}
        try:
            a, b = pointer_get(self.doc, num), pointer_get(self.doc, den)
        except (KeyError, TypeError):
            a = b = f"{NOT_MEASURED}: not reached"
        if is_number(a) and is_number(b) and b != 0:
            entry["value"] = a / b
        else:  # the string of the number that is missing says why
            missing = a if not is_number(a) else b
            entry["value"] = missing if isinstance(missing, str) else f"{NOT_MEASURED}: zero denominator"
        if goal is not None:
            op, bound = goal
            entry["goal"] = f"{op} {bound:g}" + (f" ({100 * bound:g}%)" if unit == "share" else "")
            v = entry["value"]
            entry["goal_met"] = ({"<=": v <= bound, "<": v < bound, ">=": v >= bound}[op]
                                 if is_number(v) else NOT_MEASURED)
        return entry

    # -- output --
    def save(self) -> None:
        """Rewrite both files from the document as it stands: a run killed now keeps what finished."""
        self._refresh_ratios()
        self.doc["suite"]["elapsed_s"] = self.elapsed()
        self.doc["environment"]["imported"] = imported_optional()
        doc = clean(self.doc)
        # through a temporary sibling renamed into place: a reader (or a kill) never sees half a file
        atomic_write_text(os.path.join(self.out, "gpu_suite.json"), json.dumps(doc, indent=1, allow_nan=False) + "\n")
        atomic_write_text(os.path.join(self.out, "gpu_suite.md"), render_markdown(doc))


def pointer_get(doc: dict, pointer: str):
    node = doc
    for part in pointer.strip("/").split("/"):
        node = node[part]
    return node


# ---- rows: how a measurement gets into the document ----------------------------------------------------
def failure(err: BaseException) -> dict:
    return {"status": f"error: {type(err).__name__}: {str(err)[:500]}",
            "traceback": traceback.format_exc()[-3000:]}


def measure(suite: Suite, where: dict, key: str, need_s: float, fields: tuple[str, ...], fn,
            label: str | None = None) -> dict | None:
    """``where[key] = {"status": "ok", **fn()}`` unless the budget is near; failures and OOMs are
    recorded (the run goes on). ``fields``: the numbers ``fn`` returns, set to "not measured: WHY"
    when it does not run, so ratios over them say why."""
    if not suite.allows(need_s):
        where[key] = {"status": BUDGET, **unmeasured(fields, "time budget")}
        suite.save()
        return None
    t0 = time.perf_counter()
    try:
        row = {"status": "ok", **fn()}
    except torch.OutOfMemoryError:
        torch.cuda.empty_cache()
        row = {"status": f"{NOT_MEASURED}: out of memory", **unmeasured(fields, "out of memory")}
    except Exception as err:  # noqa: BLE001 - one failed measurement must not lose the others
        row = {**failure(err), **unmeasured(fields, "error")}
    row["seconds"] = time.perf_counter() - t0
    where[key] = row
    print(f"  [{suite.elapsed():6.1f}s] {label or key}: {row['status']} ({row['seconds']:.1f}s)", flush=True)
    suite.save()
    return row


def measurement(suite: Suite, where: dict, key: str, need: str, fields: tuple[str, ...], fn, label: str):
    """``measure`` as a task to run later: a section declares all its rows and ratios first, so the
    files show the whole plan from the start. ``need``: the profile's ``need_s`` entry it costs."""
    need_s = suite.profile["need_s"][need]
    return lambda: measure(suite, where, key, need_s, fields, fn, label=label)


def placeholders(where: dict, keys, fields: tuple[str, ...]) -> None:
    for key in keys:
        where[key] = {"status": NOT_REACHED, **unmeasured(fields, "not reached")}


def rows_status(sec: dict) -> str:
    statuses = [r.get("status", "") for r in _rows(sec)]
    bad = [x for x in statuses if x != "ok"]
    return "ok" if not bad else f"partial: {len(bad)} of {len(statuses)} not ok"


def _rows(sec: dict):
    """Every measurement row of a section (dicts with a status), however nested."""
    for key, value in sec.items():
        if isinstance(value, dict):
            if "status" in value and key != "ratios":
                yield value
            elif key not in ("settings", "ratios"):
                yield from _rows(value)
