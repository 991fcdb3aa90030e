"""Step records: every result of the pipeline is current, or it is recomputed -- never silently stale.

When a step of :mod:`lpld.pipeline` finishes it writes a record beside its output,
``.lpld.<output name>.step.json`` (e.g. ``images/.lpld.lpld_ipc10.step.json``,
``students/<row>/.lpld.seed0.step.json``; hidden, and lpld bookkeeping for :mod:`lpld.utils.owner`):

* ``settings``: the stage's resolved configuration, minus what cannot change its result (device,
  workers, progress bars, resume, logging and commit intervals, the step's own output location,
  options a stage ignores) and minus the paths of its inputs, which are replaced by
* ``inputs``: a fingerprint of each input -- the ``output`` fingerprint recorded by the upstream
  step (so a change propagates downstream), or, for an input the pipeline does not make, the
  content hash of a teacher file or a cheap identity of a real dataset folder (its path, and per
  folder its mtime and file count: ImageNet is never rehashed);
* ``output``: a fingerprint of what the step wrote: the bytes of ``demo.json``, of a teacher, of
  ``final.json``; the content hash of an image set (the ``images_sha256`` label stores bind to);
  a label store's manifest, progress and per-batch checksums.

A record ``"state": "started"`` is written before a step runs, ``"done"`` once its output is
complete. Comparing the record with what the configuration resolves to now gives each step's
:class:`Status`: ``done``; ``external`` (complete output without a record: made before records
existed, or the authors' downloaded images / labels, used as they are); ``todo``; or ``changed``,
with every differing key and both values. The pipeline stops at a changed step with one line
(:class:`StaleStepError`) unless ``--recompute`` is given: then it clears that step's output -- only
a folder of ours (:mod:`lpld.utils.owner`) -- and runs it again, and every step downstream is
checked again against the new fingerprints. A key a record lacks (an option added after it was
written) is not a change.
"""
from __future__ import annotations

import dataclasses
import datetime
import hashlib
import json
import os
from typing import Any

from ..analysis.diversity import SCHEMA as DIVERSITY_SCHEMA
from ..data import ImageFolder
from ..data.demo import demo_spec, is_demo_dataset
from ..labels import incomplete_reason, open_label_store
from ..labels.common import is_our_label_store
from ..recover.io import class_complete
from ..relabel import RELABEL_SCHEMA
from ..squeeze import CLASS_STATS_SCHEMA, TRAIN_SCHEMA
from ..utils.errors import LpldInputError
from ..utils.fingerprint import file_sha256, scan_images
from ..utils.io import atomic_json_dump
from ..utils.owner import clear_dir, entries, foreign_error, is_ours
from ..validate import VALIDATE_SCHEMA
from .layout import data_path, image_dir, label_dir, run_dir, squeeze_dir, student_dir, teacher_path, val_dir
from .plan import Job, Step
from .stages import IMAGE_SOURCES, demo_settings, diversity_stage, image_source, num_classes, step_settings

RECORD_VERSION = 1
# Keys that never change what a step writes: where and how fast it runs, what it prints, how often it
# commits or checks, which part of it a shard runs, and the step's own output location.
VOLATILE = frozenset({
    "device", "workers", "progress", "resume", "dry_run", "config", "output_dir", "exp_name", "output",
    "log_every", "log_interval", "log_batches", "commit_every", "verify", "stop_after", "checkpoint_interval",
    "class_start", "class_end", "batch_shard", "overwrite", "compile", "compile_backend", "channels_last",
    "prefetch_factor", "cache_images", "input_path", "fetcher", "check_unchanged"})
# Input paths whose content the record holds in ``inputs`` instead (a moved output folder stays current).
INPUT_PATHS = frozenset({"data_path", "val_dir", "train_dir", "label_dir", "fkd_path", "teacher", "teacher_ckpt",
                         "weights", "syn", "real"})
CURRENT = ("done", "external")
_memo: dict[tuple, str] = {}


class StaleStepError(LpldInputError, ValueError):
    """A finished step whose settings or inputs differ from what it ran with."""


@dataclasses.dataclass
class Status:
    state: str                        # done | external | todo | changed
    detail: str = ""
    output: str | None = None         # the output fingerprint downstream steps record
    waiting: bool = False             # todo until an upstream step has run (then checked again)

    def line(self, name: str) -> str:
        """``done NAME``, ``done NAME (no record: external)``, ``todo NAME (after UPSTREAM)``,
        ``changed NAME (key: old -> new; ...)``: what ``--dry-run`` prints."""
        state, detail = ("done", "no record: external") if self.state == "external" else (self.state, self.detail)
        return f"{state} {name}" + (f" ({detail})" if detail else "")


# ---- fingerprints --------------------------------------------------------------------------------------
def _digest(*parts: Any) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(part if isinstance(part, bytes) else json.dumps(part, sort_keys=True, default=str).encode())
        h.update(b"\0")
    return h.hexdigest()


def file_digest(path: str) -> str:
    """sha256 of a file, computed once per process for the same size and mtime."""
    st = os.stat(path)
    key = ("file", os.path.realpath(path), st.st_size, st.st_mtime_ns)
    if key not in _memo:
        _memo[key] = file_sha256(path)
    return _memo[key]


def folder_identity(root: str) -> str:
    """A real dataset's cheap identity: its path and, per folder, its mtime and file count (adding,
    removing or renaming a file changes its folder's mtime). One directory scan per process; no file
    is read, so ImageNet costs one listing, not a rehash."""
    key = ("tree", os.path.realpath(root))
    if key not in _memo:
        rows = []
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            rows.append((os.path.relpath(dirpath, root), os.stat(dirpath).st_mtime_ns,
                         sum(1 for f in filenames if not f.startswith("."))))
        _memo[key] = _digest(os.path.realpath(root), rows)
    return _memo[key]


def images_digest(root: str) -> str:
    """Content hash of an image set: the ``images_sha256`` relabel binds its store to."""
    paths = [p for p, _ in ImageFolder(root).samples]
    listing = [(os.path.relpath(p, root), os.stat(p).st_size, os.stat(p).st_mtime_ns) for p in paths]
    key = ("images", os.path.realpath(root), _digest(listing))
    if key not in _memo:
        _memo[key] = scan_images(paths, root, decode=False).sha256
    return _memo[key]


STORE_METADATA = ("manifest.json", "progress.json", "checksums.npy", "lpld_manifest.json", "lpld_checksums.tsv",
                  "sampler_indices_epoch.json", "sampler_indices_batch.json")


def store_digest(path: str) -> str:
    """A label store: its files' names and sizes and the bytes of its manifest, progress and
    per-batch checksums (which cover every batch's content)."""
    files = []
    for dirpath, dirnames, filenames in os.walk(path):
        dirnames.sort()
        files += [(os.path.relpath(os.path.join(dirpath, f), path), os.path.getsize(os.path.join(dirpath, f)))
                  for f in sorted(filenames) if not f.startswith(".")]
    meta = [open(os.path.join(path, n), "rb").read() for n in STORE_METADATA if os.path.isfile(os.path.join(path, n))]
    return _digest(files, *meta)


# ---- where each step's output and record live ------------------------------------------------------------
def artifact(job: Job, step: Step) -> str:
    cfg = job.cfg
    if step.stage == "data":
        return data_path(cfg)
    if step.stage == "teacher":
        return os.path.join(squeeze_dir(cfg), "teacher.pth")
    if step.stage == "class_stats":
        return teacher_path(cfg)
    if step.stage == "images":
        return image_dir(cfg, step.method, step.ipc)
    if step.stage == "diversity":
        return os.path.join(run_dir(cfg), "diversity")
    if step.stage == "relabel":
        return label_dir(cfg, step.row)
    if step.stage == "validate":
        return student_dir(cfg, step.row, step.seed)
    raise KeyError(f"step {step.name!r} has no output of its own")


def record_path(job: Job, step: Step) -> str:
    """Beside the output, not in it: a label store holds its store files only (every byte counts)."""
    path = os.path.abspath(artifact(job, step))
    return os.path.join(os.path.dirname(path), f".lpld.{os.path.basename(path)}.step.json")


def read_record(job: Job, step: Step) -> dict | None:
    try:
        with open(record_path(job, step)) as f:
            rec = json.load(f)
    except (OSError, ValueError):
        return None
    return rec if isinstance(rec, dict) and rec.get("step") == step.name else None


def outputs_complete(job: Job, step: Step) -> bool:
    """Every output file of ``step`` is there (complete by construction of each writer)."""
    path = artifact(job, step)
    if step.stage == "data":
        return os.path.isfile(os.path.join(path, "demo.json"))
    if step.stage in ("teacher", "class_stats"):
        return os.path.isfile(path)
    if step.stage == "images":
        return (os.path.isdir(path) and os.path.isfile(teacher_path(job.cfg))
                and all(class_complete(path, c, step.ipc) for c in range(num_classes(job.cfg))))
    if step.stage == "diversity":
        return os.path.isfile(os.path.join(path, "diversity_summary.json"))
    if step.stage == "relabel":
        try:
            return os.path.isdir(path) and incomplete_reason(open_label_store(path)) == ""
        except (FileNotFoundError, ValueError):
            return False
    return os.path.isfile(os.path.join(path, "final.json"))  # validate


def output_fingerprint(job: Job, step: Step) -> str:
    path = artifact(job, step)
    if step.stage == "data":
        with open(os.path.join(path, "demo.json")) as f:
            return _digest(json.load(f))
    if step.stage in ("teacher", "class_stats"):
        return file_digest(path)
    if step.stage == "images":
        return images_digest(path)
    if step.stage == "relabel":
        return store_digest(path)
    return file_digest(os.path.join(path, "diversity_summary.json" if step.stage == "diversity" else "final.json"))


# ---- what a step runs with ----------------------------------------------------------------------------
def clean_settings(schema, ns) -> dict[str, Any]:
    """The settings of a stage namespace that decide its result (JSON values)."""
    values = {k: v for k, v in vars(ns).items() if k not in VOLATILE and k not in INPUT_PATHS
              and not getattr(schema.get(k), "ignored", "")}
    return json.loads(json.dumps(values, sort_keys=True, default=str))


def settings_of(job: Job, step: Step) -> dict[str, Any]:
    if step.stage == "data":
        return {"demo_data": demo_spec(**demo_settings(job.cfg))}
    if step.stage == "diversity":
        return clean_settings(DIVERSITY_SCHEMA, diversity_stage(job))
    if step.stage == "images":
        schema = IMAGE_SOURCES[image_source(step.method)][0]
    else:
        schema = {"teacher": TRAIN_SCHEMA, "class_stats": CLASS_STATS_SCHEMA, "relabel": RELABEL_SCHEMA,
                  "validate": VALIDATE_SCHEMA}[step.stage]
    return clean_settings(schema, step_settings(job, step)[1])


def _teacher_input(job: Job) -> str:
    if job.cfg.teacher is None:
        return status(job, job["squeeze/class_stats"]).output
    return file_digest(job.cfg.teacher)


def _data_input(job: Job) -> str:
    cfg = job.cfg
    return status(job, job["data/demo"]).output if cfg.dataset == "demo" else folder_identity(data_path(cfg))


def inputs_of(job: Job, step: Step) -> dict[str, str]:
    """The fingerprint of every input of ``step`` (its upstream steps are current)."""
    cfg = job.cfg
    if step.stage == "data":
        return {}
    if step.stage == "teacher":
        return {"data": _data_input(job)}
    if step.stage == "class_stats":
        return {"data": _data_input(job), "squeeze/teacher": status(job, job["squeeze/teacher"]).output}
    if step.stage == "images":
        return {"teacher": _teacher_input(job),
                **({"data": _data_input(job)} if image_source(step.method) != "recover" else {})}
    out = {up: status(job, job[up]).output for up in step.after if job[up].stage in ("images", "relabel")}
    if step.stage == "relabel":
        out["teacher"] = file_digest(cfg.relabel_teacher) if cfg.relabel_teacher else _teacher_input(job)
    elif step.stage == "validate":
        out[step.images] = status(job, job[step.images]).output
        data, val = os.path.abspath(data_path(cfg)), os.path.abspath(val_dir(cfg))
        inside = os.path.commonpath([data, val]) == data  # the default: <data_path>/val, or the Tiny root
        out["val"] = _data_input(job) if inside else folder_identity(val_dir(cfg))
    else:  # diversity
        out.update(teacher=_teacher_input(job), data=_data_input(job))
    return out


# ---- status ---------------------------------------------------------------------------------------------
def _short(value: Any) -> str:
    if isinstance(value, str) and len(value) == 64 and all(c in "0123456789abcdef" for c in value):
        return value[:12]  # a fingerprint
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def differences(old: dict, new: dict, prefix: str = "") -> list[str]:
    """``key: old -> new`` for every key both hold with different values (a key a record lacks was
    added after it was written: not a change)."""
    return [f"{prefix}{k}: {_short(old[k])} -> {_short(new[k])}" for k in sorted(new) if k in old and old[k] != new[k]]


def status(job: Job, step: Step) -> Status:
    """Whether ``step`` is current (see the module docstring); the job keeps the statuses computed
    so far and the steps run in this invocation."""
    known = job.status
    if step.name in known:
        return known[step.name]
    if step.stage == "report":
        return Status("todo", "always rewritten")
    for up in step.after:
        up_status = status(job, job[up])
        if up_status.state not in CURRENT:
            known[step.name] = Status("todo", f"after {up}", waiting=True)
            return known[step.name]
    rec = read_record(job, step)
    if rec is not None and rec.get("state") == "clearing":
        known[step.name] = Status("changed", "a recompute was interrupted while it cleared the old output")
        return known[step.name]
    complete = outputs_complete(job, step)
    if rec is None and step.stage == "data" and complete:  # demo.json records the demo's settings
        with open(os.path.join(artifact(job, step), "demo.json")) as f:
            rec = {"state": "done", "settings": {"demo_data": json.load(f)}, "inputs": {}}
    if rec is None:
        rerun = [up for up in step.after if up in job.ran]
        if complete and rerun:
            result = Status("changed", f"{rerun[0]} was recomputed and this output has no record to check it against")
        else:
            result = Status("external", output=output_fingerprint(job, step)) if complete else Status("todo")
    else:
        diffs = differences(rec.get("settings", {}), settings_of(job, step))
        diffs += differences(rec.get("inputs", {}), inputs_of(job, step), prefix="input ")
        if diffs:
            result = Status("changed", "; ".join(diffs))
        elif complete:
            result = Status("done", output=rec.get("output") or output_fingerprint(job, step))
        else:
            result = Status("todo", "resumes" if rec.get("state") == "started" else "")
    known[step.name] = result
    return result


def stale_error(name: str, st: Status, more: int = 0, shard: bool = False) -> StaleStepError:
    also = f" (and {more} more changed step{'s' if more > 1 else ''}: lpld pipeline --dry-run lists them)" if more else ""
    fix = ("a shard never clears a step other shards may be writing: recompute it with lpld pipeline --recompute "
           "first" if shard else "rerun with --recompute to recompute it and the steps that depend on it, or restore "
           "the setting")
    return StaleStepError(f"step {name} changed since it ran: {st.detail}{also}; {fix}")


# ---- writing ----------------------------------------------------------------------------------------------
def write_record(job: Job, step: Step, state: str) -> dict:
    rec = {"version": RECORD_VERSION, "step": step.name, "state": state, "settings": settings_of(job, step),
           "inputs": inputs_of(job, step),
           "output": output_fingerprint(job, step) if state == "done" else None,
           "written": datetime.datetime.now().isoformat(timespec="seconds")}
    atomic_json_dump(rec, record_path(job, step))
    return rec


# step stage -> (is this folder ours?, what it is called in an error)
_OWNED = {"teacher": (lambda p: is_ours(p, ["squeeze"]), "teacher output directory"),
          "data": (is_demo_dataset, "demo dataset"), "relabel": (is_our_label_store, "label store"),
          "images": (lambda p: is_ours(p, ["images"]), "image set"),
          "diversity": (lambda p: is_ours(p, ["diversity"]), "diversity folder"),
          "validate": (lambda p: is_ours(p, ["validate"]), "student run")}


def clear(job: Job, step: Step) -> None:
    """Remove the output of a changed step before it runs again: only our own (marker-checked);
    the folder itself stays (its owner, group and mode)."""
    squeeze = step.stage in ("teacher", "class_stats")
    path = artifact(job, step)
    folder = squeeze_dir(job.cfg) if squeeze else path
    owned, what = _OWNED["teacher" if squeeze else step.stage]
    if entries(folder) and not owned(folder):
        raise foreign_error(folder, what, "it is left as it is; move it away yourself to recompute it")
    # a kill while clearing leaves this state: the next run knows the old output is half gone
    atomic_json_dump({"version": RECORD_VERSION, "step": step.name, "state": "clearing"}, record_path(job, step))
    if not squeeze:
        clear_dir(path, owned, what)
        return
    doomed = [path] if step.stage == "class_stats" else [os.path.join(folder, f) for f in entries(folder)]
    for f in doomed:  # the teacher's folder keeps its marker and the steps' records
        if os.path.isfile(f):
            os.remove(f)
