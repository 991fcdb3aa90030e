"""Section ``speed``: each comparison measured side by side in this process, on the same inputs,
and recorded as the ratio of two measured numbers. One planner per comparison declares its rows
(placeholders until measured) and ratios and returns its measurements, to run in that order:

* ``recovery``: image-iterations/s, ours (K classes a step, bf16, compiled) vs the authors' loop;
* ``class_stats``: the class-statistics pass vs a plain forward;
* ``labels``: student steps/s reading labels from our store vs the authors' per-batch files;
* ``input_path``: the device-side input path vs PIL;
* ``teacher``: teacher training images/s, compiled vs eager.

The compiled recovery at the K values other than the headline one (a compile each) is returned
apart: it runs after every other section (see cli.run_deferred)."""
from __future__ import annotations

import functools
import os
import tempfile
import time
import types

import torch

# The benchmarks measured elsewhere, reused as they are (their CLIs print the same figures).
import bench_class_stats
import bench_input_path
import bench_recover
import bench_validate
from lpld.labels import convert
from lpld.models import build_model
from lpld.squeeze.train import train_one_epoch as teacher_train_one_epoch

from .common import BUDGET, mib, reset_compiler, unmeasured
from .profiles import ANCHORS
from .suite import Suite, measure, measurement, placeholders

REC_FIELDS = ("sec_per_step", "image_iters_per_s", "warmup_s", "first_call_overhead_s", "peak_gpu_memory_mib")
LAB_FIELDS = ("images_per_s", "steps_per_s", "step_s", "read_s_per_batch", "data_wait_frac")
LABEL_SOURCES = ("ours_store", "authors_files", "in_memory")  # one measurement fills the three rows


def run_speed(suite: Suite, work: str) -> None:
    if suite.cuda:
        torch.backends.cudnn.benchmark = True  # as every stage sets it: each timed step repeats one shape
    sec = suite.section("speed")
    primary, secondary = recovery(suite, sec)
    for plan in (class_stats, labels, input_path, teacher):
        primary += plan(suite, sec, work)
    suite.save()  # every row and ratio of the section is in the files before the first one runs
    for task in primary:
        task()
    suite.deferred = secondary


# ---- recovery: image-iterations per second ------------------------------------------------------------
def recovery(suite: Suite, sec: dict) -> tuple[list, list]:
    """Every shape's measurements: (the headline ones, the compiled K values left for later)."""
    rec = sec["recovery"] = {"anchor_authors_code_h100_image_iters_per_s":
                             dict(ANCHORS["recovery_authors_code_h100_image_iters_per_s"])}
    primary, secondary = [], []
    for name, over in suite.profile["speed"]["recovery"]["settings"].items():
        first, later = _recovery_setting(suite, rec, name, over)
        primary += first
        secondary += later
    return primary, secondary


def _recovery_setting(suite: Suite, rec: dict, name: str, over: dict) -> tuple[list, list]:
    rp = suite.profile["speed"]["recovery"]
    size, classes, tiny, _, dataset, lr, r_bn, jitter = bench_recover.SETTINGS[name]
    spec = {"image_size": size, "num_classes": classes, "tiny_stem": tiny, "dataset": dataset, "lr": lr,
            "r_bn": r_bn, "jitter": list(jitter), **over}
    ks = sorted(rp["ks"])
    compiled_ks = sorted(spec.pop("compiled_ks", rp.get("compiled_ks", ks)))
    out = rec[name] = {"settings": {**spec, "model": rp["model"], "ks": ks, "compiled_ks": compiled_ks,
                                    "iters": rp["iters"], "warmup": rp["warmup"],
                                    "augment_draw": rp["augment_draw"]},
                       "authors_loop": {}, "ours_eager": {}, "ours_compiled": {}, "ratios": {}}
    _recovery_rows(suite, out, name, ks, compiled_ks)
    # one teacher with random weights per shape, built when its first row runs, shared by the others
    net = functools.cache(lambda: _recovery_teacher(rp["model"], spec, suite.device))
    backend = suite.profile["compile_backend"]

    def task(variant: str, k: int, amp: bool, cl: bool, compile_model):
        fn = functools.partial(_recovery_row, suite, spec, net, k, amp, cl, compile_model)
        return measurement(suite, out[variant], f"K{k}", "compile" if compile_model else "measure", REC_FIELDS, fn,
                           label=f"recovery {name} {variant} K={k}")

    top = max(compiled_ks)
    first = [task("authors_loop", 1, False, False, False), task("ours_compiled", top, True, True, backend)]
    first += [task("ours_eager", k, True, True, False) for k in ks]
    later = [task("ours_compiled", k, True, True, backend) for k in sorted(set(compiled_ks) - {top}, reverse=True)]
    return first, later


def _recovery_rows(suite: Suite, out: dict, name: str, ks: list[int], compiled_ks: list[int]) -> None:
    """The rows of one shape (placeholders until measured) and the ratio of each to the authors' loop;
    the goal (>= 10x) stands on the compiled ImageNet-1K row with the most classes per step."""
    placeholders(out["authors_loop"], ["K1"], REC_FIELDS)
    placeholders(out["ours_eager"], [f"K{k}" for k in ks], REC_FIELDS)
    placeholders(out["ours_compiled"], [f"K{k}" for k in compiled_ks], REC_FIELDS)
    base = f"/sections/speed/recovery/{name}"
    for variant, kk in (("ours_compiled", compiled_ks), ("ours_eager", ks)):
        for k in kk:
            goal = (">=", 10.0) if (name == "imagenet1k" and variant == "ours_compiled" and k == max(kk)) else None
            suite.ratio(out["ratios"], f"{variant}_K{k}_vs_authors_loop", f"{base}/{variant}/K{k}/image_iters_per_s",
                        f"{base}/authors_loop/K1/image_iters_per_s", goal)


def _recovery_teacher(model: str, spec: dict, dev: torch.device) -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model(model, spec["num_classes"], tiny_stem=spec["tiny_stem"], class_aware=True).to(dev).eval()


def _recovery_row(suite: Suite, spec: dict, net, k: int, amp: bool, cl: bool, compile_model) -> dict:
    """One variant: ``k`` classes a step, ``amp`` bf16 or fp32, ``cl`` channels_last, ``compile_model``
    a backend name or False (eager)."""
    rp = suite.profile["speed"]["recovery"]
    if compile_model:
        reset_compiler()

    def settings(n):
        return bench_recover.recovery_settings(spec["image_size"], spec["dataset"], spec["lr"], spec["r_bn"],
                                               tuple(spec["jitter"]), n, amp, cl, rp["augment_draw"])
    r = bench_recover.measure_variant(net(), settings, spec["ipc"], k, rp["warmup"], rp["iters"], suite.device,
                                      compile_model)
    sps = r["sec_per_step"]
    return {"classes_per_step": k, "ipc": spec["ipc"], "batch_images": k * spec["ipc"],
            "precision": "bf16" if amp else "fp32", "channels_last": cl, "compile": compile_model or "eager",
            "sec_per_step": sps, "image_iters_per_s": k * spec["ipc"] / sps, "warmup_s": r["warmup_s"],
            "first_call_overhead_s": max(0.0, r["warmup_s"] - rp["warmup"] * sps),
            "peak_gpu_memory_mib": mib(r["peak_gpu_memory_bytes"])}


# ---- class statistics vs a plain forward --------------------------------------------------------------
def class_stats(suite: Suite, sec: dict, work: str) -> list:
    cp = suite.profile["speed"]["class_stats"]
    cs = sec["class_stats"] = {"settings": cp, "anchor_authors_loop_vs_plain_forward":
                               ANCHORS["class_stats_authors_loop_vs_plain_forward"], "ratios": {}}
    fields = ("plain_s_per_batch", "ours_s_per_batch", "loop_s_per_batch")
    placeholders(cs, ["measured"], fields)
    b = "/sections/speed/class_stats/measured"
    suite.ratio(cs["ratios"], "ours_vs_plain_forward", f"{b}/ours_s_per_batch", f"{b}/plain_s_per_batch", ("<=", 1.15))
    suite.ratio(cs["ratios"], "per_class_loop_vs_plain_forward", f"{b}/loop_s_per_batch", f"{b}/plain_s_per_batch")

    def run():
        r = bench_class_stats.measure(cp["model"], cp["num_classes"], cp["batch_size"], cp["image_size"],
                                      suite.device, cp["repeats"], cp["loop_repeats"])
        return {"plain_s_per_batch": r["plain_s"], "ours_s_per_batch": r["ours_s"], "loop_s_per_batch": r["loop_s"],
                "classes_present": r["classes_present"], "precision": "fp32", "channels_last": suite.cuda}
    return [measurement(suite, cs, "measured", "measure", fields, run, label="class statistics vs plain forward")]


# ---- student steps/s: labels from our store vs the authors' per-batch files vs memory -----------------
def labels(suite: Suite, sec: dict, work: str) -> list:
    lp = suite.profile["speed"]["labels"]
    lb = sec["labels"] = {"settings": lp, "ratios": {}}
    placeholders(lb, LABEL_SOURCES, LAB_FIELDS)
    b = "/sections/speed/labels"
    suite.ratio(lb["ratios"], "ours_vs_authors_steps_per_s", f"{b}/ours_store/steps_per_s",
                f"{b}/authors_files/steps_per_s")
    suite.ratio(lb["ratios"], "ours_vs_in_memory_steps_per_s", f"{b}/ours_store/steps_per_s",
                f"{b}/in_memory/steps_per_s")
    for key in ("ours_store", "authors_files"):
        suite.ratio(lb["ratios"], f"{key}_read_share_of_step", f"{b}/{key}/read_s_per_batch", f"{b}/{key}/step_s",
                    ("<", 0.05), unit="share")

    def task():
        # one measurement fills the three rows (the sources interleaved): it costs two
        row = measure(suite, lb, "run", 2 * suite.profile["need_s"]["measure"], (),
                      lambda: _labels_run(suite, lb, lp, work), label="student steps/s by label source")
        status = BUDGET if row is None else row["status"]
        if status != "ok":  # the three rows say why they hold no numbers
            why = "time budget" if row is None else status
            for key in LABEL_SOURCES:
                lb[key] = {"status": status, **unmeasured(LAB_FIELDS, why)}
            suite.save()
    return [task]


def _labels_data(lp: dict, dev: torch.device, work: str):
    """Images, our store of their labels and the same store converted to the authors' files."""
    args = types.SimpleNamespace(device=str(dev), model=lp["model"], size=lp["size"],
                                 classes=lp["classes"], batch_size=lp["batch_size"], images=lp["images"],
                                 epochs=lp["epochs"], steps=lp["steps"], workers=lp["workers"], repeats=lp["repeats"])
    root = os.path.join(work, "speed_labels")
    train_dir, ours, theirs = (os.path.join(root, d) for d in ("images", "ours", "authors"))
    bench_validate.make_images(train_dir, args.images, min(args.classes, args.images), args.size)
    bench_validate.make_store(train_dir, ours, args)
    convert(ours, theirs, to="authors", progress=False, overwrite=True)
    return args, train_dir, {"ours_store": ours, "authors_files": theirs, "in_memory": ours}


def _labels_run(suite: Suite, lb: dict, lp: dict, work: str) -> dict:
    args, train_dir, dirs = _labels_data(lp, suite.device, work)
    best = {}
    order = ["in_memory", "ours_store", "authors_files"]
    for rep in range(args.repeats):  # interleaved, the order turned each time: spreads machine noise
        for key in (order if rep % 2 == 0 else order[::-1]):
            r = bench_validate.run("memory" if key == "in_memory" else "store", args, train_dir, dirs[key],
                                   suite.device)
            if key not in best or r["images_per_s"] > best[key]["images_per_s"]:
                best[key] = r
    for key, r in best.items():
        read = bench_validate.time_reads(dirs[key], lp["reads"]) if key != "in_memory" else 0.0
        ips = r["images_per_s"]
        lb[key] = {"status": "ok", "images_per_s": ips, "steps_per_s": ips / args.batch_size,
                   "step_s": args.batch_size / ips, "read_s_per_batch": read,
                   "data_wait_frac": r["data_wait_frac"], "best_of": args.repeats,
                   "labels": "none read (records served from a dict)" if key == "in_memory" else
                   "our memory-mapped store" if key == "ours_store" else "the authors' batch_*.tar files"}
    return {"variants": len(best)}


# ---- input path: PIL in workers vs views cut on the device --------------------------------------------
def input_path(suite: Suite, sec: dict, work: str) -> list:
    ip = suite.profile["speed"]["input_path"]
    inp = sec["input_path"] = {"settings": ip, "ratios": {}}
    fields = ("pil_decode_cpu_us_per_image", "pil_decoded_cpu_us_per_image", "device_host_cpu_us_per_image",
              "device_wall_us_per_image", "cores_to_feed_pil_decode", "cores_to_feed_device_host")
    placeholders(inp, ["measured"], fields)
    b = "/sections/speed/input_path/measured"
    suite.ratio(inp["ratios"], "pil_decode_vs_device_host_cpu_us", f"{b}/pil_decode_cpu_us_per_image",
                f"{b}/device_host_cpu_us_per_image", (">=", 5.0))
    fn = functools.partial(_input_path_row, ip, suite.device, work)
    return [measurement(suite, inp, "measured", "measure", fields, fn, label="input path")]


def _input_path_row(ip: dict, dev: torch.device, work: str) -> dict:
    args = types.SimpleNamespace(images=ip["images"], batch=ip["batch"], batches=ip["batches"], repeats=ip["repeats"])
    tmp = tempfile.mkdtemp(prefix="inputs_", dir=work)
    prepared = bench_input_path.prepare(ip["size"], args, tmp)
    r = bench_input_path.speed(ip["size"], args, tmp, cpu_compute=False, prepared=prepared)
    wall = bench_input_path.device_wall_us(prepared[0], prepared[2], ip["size"], dev, ip["repeats"])
    feed = ip["feed_images_per_s"] / 1e6  # cores = CPU-us per image x images/s / 1e6
    return {"size": ip["size"], "pil_decode_cpu_us_per_image": r["pil_decode"],
            "pil_decoded_cpu_us_per_image": r["pil_cached"], "device_host_cpu_us_per_image": r["device_host"],
            "device_wall_us_per_image": wall, "device_wall_on": str(dev),
            "cores_to_feed_pil_decode": r["pil_decode"] * feed, "cores_to_feed_pil_decoded": r["pil_cached"] * feed,
            "cores_to_feed_device_host": r["device_host"] * feed,
            "cores_formula": f"CPU-us per image x {ip['feed_images_per_s']} images/s / 1e6",
            "operators_per_batch": r["ops_per_batch"], "max_pixel_diff_pil_vs_device": r["max_pixel_diff"]}


# ---- teacher training images/s, eager vs compiled -----------------------------------------------------
def teacher(suite: Suite, sec: dict, work: str) -> list:
    tp = suite.profile["speed"]["teacher"]
    te = sec["teacher"] = {"settings": tp, "ratios": {}}
    fields = ("images_per_s", "step_s", "warmup_s")
    placeholders(te, ["eager", "compiled"], fields)
    suite.ratio(te["ratios"], "compiled_vs_eager_images_per_s", "/sections/speed/teacher/compiled/images_per_s",
                "/sections/speed/teacher/eager/images_per_s")
    return [measurement(suite, te, "compiled", "compile", fields, functools.partial(_teacher_row, suite, tp, True),
                        label="teacher training, compiled"),
            measurement(suite, te, "eager", "measure", fields, functools.partial(_teacher_row, suite, tp, False),
                        label="teacher training, eager")]


def _teacher_row(suite: Suite, tp: dict, compiled: bool) -> dict:
    """The stage's own epoch function over one device-resident batch: the GPU step alone, no loading."""
    dev, backend = suite.device, suite.profile["compile_backend"]
    reset_compiler()
    torch.manual_seed(0)
    net = build_model(tp["model"], tp["num_classes"], tiny_stem=tp["tiny_stem"]).to(dev)
    net = net.to(memory_format=torch.channels_last)
    forward = torch.compile(net, backend=backend) if compiled else net
    opt = torch.optim.SGD(net.parameters(), lr=tp["lr"], momentum=0.9, weight_decay=1e-4)
    x = torch.randn(tp["batch_size"], 3, tp["image_size"], tp["image_size"], device=dev)
    x = x.contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, tp["num_classes"], (tp["batch_size"],), device=dev)
    cfg = types.SimpleNamespace(epochs=1, progress=False, channels_last=True, amp=True, log_interval=1 << 30)
    crit = torch.nn.CrossEntropyLoss()
    t0 = time.perf_counter()
    teacher_train_one_epoch(forward, crit, opt, [(x, y)] * tp["warmup_steps"], dev, 0, cfg)
    warm = time.perf_counter() - t0
    if suite.cuda:
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    teacher_train_one_epoch(forward, crit, opt, [(x, y)] * tp["steps"], dev, 0, cfg)  # reads back: synced
    elapsed = time.perf_counter() - t0
    return {"images_per_s": tp["steps"] * tp["batch_size"] / elapsed, "step_s": elapsed / tp["steps"],
            "warmup_s": warm, "compile": backend if compiled else "eager", "precision": "bf16",
            "channels_last": True, "data": "one device-resident batch (the GPU step alone, no loading)"}
