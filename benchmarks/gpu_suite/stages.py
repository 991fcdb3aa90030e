"""Section ``stages``: every stage of the pipeline once, through its own entry point, on a generated
demo dataset, with the speed options the stage has (bf16 autocast, channels_last, torch.compile).
Each stage reads what the one before it wrote; one that fails leaves the stages after it saying
which stage they needed."""
from __future__ import annotations

import json
import os
import time
from typing import Callable, NamedTuple

import torch

from lpld.analysis.diversity import SCHEMA as DIVERSITY_SCHEMA, run_diversity
from lpld.config import resolve
from lpld.data import ImageFolder, make_demo_dataset
from lpld.labels import open_label_store
from lpld.recover import RECOVER_SCHEMA, run_recovery
from lpld.relabel import run_relabel
from lpld.squeeze import CLASS_STATS_SCHEMA, TRAIN_SCHEMA, run_class_stats, run_teacher_training
from lpld.validate import run_validate

from .common import BUDGET, NA_CPU, NOT_REACHED, mib, reset_compiler
from .suite import Suite, failure

NO_COMPILE = "not supported by the stage"


class Context:
    """What the stage functions share: the profile's ``stages`` block, the rows so far and the
    folders each stage writes into (under the run's scratch folder)."""

    def __init__(self, suite: Suite, rows: dict, work: str) -> None:
        self.suite, self.rows, self.p = suite, rows, suite.profile["stages"]
        self.size, self.classes = self.p["demo"]["image_size"], self.p["demo"]["num_classes"]
        self.backend = suite.profile["compile_backend"]
        self.paths = {"data": os.path.join(work, "data"), "squeeze": os.path.join(work, "squeeze"),
                      "teacher_cbn": os.path.join(work, "squeeze", "teacher_class_bn.pth"),
                      "images": os.path.join(work, "images"), "labels": os.path.join(work, "labels", "lpld_ipc"),
                      "student": os.path.join(work, "student"), "diversity": os.path.join(work, "diversity")}

    def options(self, **stage_specific) -> dict:
        """A stage's options: those every stage shares (the demo data, the model, the device, its
        autocast, no progress bars), then its own."""
        return dict(dataset="demo", model=self.p["model"], tiny_stem=self.p["tiny_stem"],
                    device=self.suite.profile["device"], amp=True, progress=False, **stage_specific)


# ---- the stages, in the order they run ------------------------------------------------------------------
def demo_data(c: Context) -> dict:
    demo = c.p["demo"]
    return {"root": make_demo_dataset(c.paths["data"], **demo), **demo}


def teacher_training(c: Context) -> dict:
    t = c.p["teacher"]
    cfg = resolve(TRAIN_SCHEMA, [("gpu_suite", c.options(
        data_path=c.paths["data"], image_size=c.size, batch_size=t["batch_size"], workers=c.p["workers"],
        channels_last=True, epochs=t["epochs"], lr=t["lr"], warmup_epochs=t["warmup_epochs"],
        output_dir=c.paths["squeeze"], seed=0))])
    m = run_teacher_training(cfg)
    return {k: m[k] for k in ("epoch", "val_top1", "val_loss", "epoch_seconds") if k in m}


def class_stats(c: Context) -> dict:
    cfg = resolve(CLASS_STATS_SCHEMA, [("gpu_suite", c.options(
        data_path=c.paths["data"], image_size=c.size, batch_size=c.p["class_stats"]["batch_size"],
        workers=c.p["workers"], channels_last=True, weights=os.path.join(c.paths["squeeze"], "teacher.pth"),
        output=c.paths["teacher_cbn"]))])
    info = run_class_stats(cfg)
    return {k: info[k] for k in ("images", "seconds", "val_top1", "mode", "amp")}


def recover(c: Context, mode: str) -> dict:
    r = c.p["recover"]
    extra = ({"mode": "class", "groups_per_step": c.classes} if mode == "lpld" else
             {"mode": "sre2l", "batch_size": c.classes, "groups_per_step": r["ipc"]})  # the same 10 x ipc batch
    cfg = resolve(RECOVER_SCHEMA, [("gpu_suite", c.options(
        teacher=c.paths["teacher_cbn"], image_size=c.size, ipc=r["ipc"], iterations=r["iterations"], lr=r["lr"],
        r_bn=r["r_bn"], jitter_min=r["jitter_min"], jitter_max=r["jitter_max"], channels_last=True, compile=True,
        output_dir=c.paths["images"], exp_name=mode, **extra))])
    # The schema's compile is on/off (inductor); the Recoverer also takes a backend name, which
    # the CPU twin needs (aot_eager): the same stage call with the backend of the profile.
    cfg.compile = c.backend
    root = run_recovery(cfg)
    logs = [os.path.join(root, f) for f in os.listdir(root) if f.startswith("recover_log_") and f.endswith(".jsonl")]
    recs = [json.loads(line) for path in logs for line in open(path) if line.strip()]
    return {"root": root, "images": len(ImageFolder(root)), "classes": len(recs),
            "teacher_top1_mean": sum(x["top1"] for x in recs) / max(1, len(recs)),
            "ce_mean": sum(x["ce"] for x in recs) / max(1, len(recs))}


def relabel(c: Context) -> dict:
    lab = c.p["relabel"]
    out = run_relabel(c.options(
        train_dir=os.path.join(c.paths["images"], "lpld"), teacher_ckpt=c.paths["teacher_cbn"],
        num_classes=c.classes, batch_size=lab["batch_size"], epochs=lab["epochs"], input_size=c.size,
        mix_type="cutmix", output_dir=c.paths["labels"], workers=c.p["workers"], channels_last=True,
        input_path=lab["input_path"]))
    store = open_label_store(out)
    return {"batches": store.num_batches, "bytes": store.nbytes(), "input_path": lab["input_path"]}


def validate(c: Context) -> dict:
    v, lab = c.p["validate"], c.p["relabel"]  # the student replays relabel's batches and epochs
    m = run_validate(c.options(
        train_dir=os.path.join(c.paths["images"], "lpld"), label_dir=c.paths["labels"],
        val_dir=os.path.join(c.paths["data"], "val"), num_classes=c.classes, batch_size=lab["batch_size"],
        epochs=lab["epochs"], train_epochs=v["train_epochs"], workers=c.p["workers"], channels_last=True,
        compile=True, compile_backend=c.backend, input_path=v["input_path"], output_dir=c.paths["student"],
        val_interval=v["train_epochs"], adamw_lr=v["adamw_lr"], temperature=v["temperature"], mix_type="cutmix",
        seed=0))
    return {k: m[k] for k in ("top1", "top5", "best_top1", "val_loss", "label_batches_used") if k in m}


def diversity(c: Context) -> dict:
    d = c.p["diversity"]
    sets = [f"{m}={os.path.join(c.paths['images'], m)}" for m in ("lpld", "sre2l")
            if c.rows[f"recover_{m}"]["status"] == "ok"]
    cfg = resolve(DIVERSITY_SCHEMA, [("gpu_suite", c.options(
        num_classes=c.classes, image_size=c.size, batch_size=d["batch_size"], workers=c.p["workers"],
        weights=c.paths["teacher_cbn"], syn=sets, real=c.paths["data"], real_per_class=d["real_per_class"],
        output_dir=c.paths["diversity"]))])
    out = {}
    for name, m in run_diversity(cfg)["methods"].items():
        out[f"{name}_images"] = m["images"]
        if m.get("cosine"):
            out[f"{name}_cosine_mean"] = m["cosine"]["mean"]
    return out


class Stage(NamedTuple):
    name: str
    run: Callable[[Context], dict]
    needs: tuple[str, ...]  # the stages whose output it reads
    amp: str | None  # the autocast it runs under, as the row records it; None: no model, no flags
    compiled: bool = False  # compiled with the profile's backend (and budgeted as a compile)


STAGE_TABLE = (
    Stage("demo_data", demo_data, (), None),
    Stage("teacher_training", teacher_training, ("demo_data",), "bf16"),
    Stage("class_stats", class_stats, ("teacher_training",), "bf16"),
    Stage("recover_lpld", lambda c: recover(c, "lpld"), ("class_stats",), "bf16", compiled=True),
    Stage("recover_sre2l", lambda c: recover(c, "sre2l"), ("class_stats",), "bf16", compiled=True),
    # relabel's --amp is fp16 autocast (its logits are stored as fp16)
    Stage("relabel", relabel, ("recover_lpld",), "fp16"),
    Stage("validate", validate, ("relabel",), "bf16", compiled=True),
    Stage("diversity", diversity, ("recover_lpld",), "bf16"),
)
STAGES = tuple(s.name for s in STAGE_TABLE)


# ---- running them ---------------------------------------------------------------------------------------
def run_stages(suite: Suite, work: str) -> None:
    rows = suite.section("stages").setdefault("rows", {})
    for name in STAGES:
        rows[name] = {"status": NOT_REACHED}
    suite.save()
    c = Context(suite, rows, work)
    for stage in STAGE_TABLE:
        rows[stage.name] = run_stage(c, stage)
        suite.save()


def run_stage(c: Context, stage: Stage) -> dict:
    """One stage's row: wall time and peak GPU memory, its flags and what it returned; or why it
    did not run (a stage it needs did not finish, or the budget would not cover it)."""
    suite = c.suite
    missing = [d for d in stage.needs if c.rows[d]["status"] != "ok"]
    if missing:
        return {"status": f"not run: needs {', '.join(missing)}"}
    if not suite.allows(suite.profile["need_s"]["compile" if stage.compiled else "stage"]):
        return {"status": BUDGET}
    flags = {} if stage.amp is None else {"amp": stage.amp, "channels_last": True,
                                          "compile": c.backend if stage.compiled else NO_COMPILE}
    reset_compiler()  # each stage compiles as in its own process
    if suite.cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    try:
        result = stage.run(c)
        if suite.cuda:
            torch.cuda.synchronize()
        row = {"status": "ok"}
    except Exception as err:  # noqa: BLE001 - later stages say which one they needed
        result, row = None, failure(err)
    row.update(wall_s=time.perf_counter() - t0,
               peak_gpu_memory_mib=mib(torch.cuda.max_memory_allocated()) if suite.cuda else NA_CPU,
               **flags, result=result)
    print(f"  [{suite.elapsed():6.1f}s] stage {stage.name}: {row['status']} ({row['wall_s']:.1f}s)", flush=True)
    return row
