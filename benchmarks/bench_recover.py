#!/usr/bin/env python
"""Recovery throughput: image-iterations per second, single-class (the authors' loop) vs batched.

    python benchmarks/bench_recover.py                       # GPU: both settings, all modes
    python benchmarks/bench_recover.py --device cpu --threads 2 --settings tiny --ipc 10 \
        --classes-per-step 1 4 --iters 3                     # small CPU figures

Settings (paper): ``imagenet1k`` = 224 px, ResNet-18, 1000 classes, ipc 50; ``tiny`` = 64 px,
ResNet-18 with the Tiny stem, 200 classes, ipc 50 and 100. The teacher has random weights (speed
does not depend on them); one "image-iteration" is one image through one optimisation step
(augment + forward + backward + Adam + clip). Projection: ImageNet-1K IPC50 needs
1000 * 50 * 4000 = 2e8 image-iterations.

``--quality TEACHER.pth --dataset imagenet|tiny ...`` instead recovers a few classes with fp32 and
with bf16 autocast (+ channels_last) and prints, per variant, the teacher top-1 on the images and
the final CE / BN loss: the check that bf16 reaches the same objective as fp32.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402

from lpld.data.transforms import normalization  # noqa: E402
from lpld.models import build_model  # noqa: E402
from lpld.recover import Group, Recoverer, RecoverySettings  # noqa: E402

SETTINGS = {
    # name: (image size, classes, tiny stem, ipc list, dataset, lr, r_bn, jitter)
    "imagenet1k": (224, 1000, False, [50], "imagenet", 0.25, 0.01, (0, 32)),
    "tiny": (64, 200, True, [50, 100], "tiny", 0.1, 0.05, (-4, 4)),
}
IN1K_IPC50_IMAGE_ITERS = 1000 * 50 * 4000


def recovery_settings(size: int, dataset: str, lr: float, r_bn: float, jitter, iterations: int, amp: bool,
                      channels_last: bool, augment_draw: str) -> RecoverySettings:
    """The recovery settings of one timed variant (no progress bar, no logging)."""
    mean, std = normalization(dataset)
    return RecoverySettings(image_size=size, iterations=iterations, lr=lr, r_bn=r_bn, jitter=jitter,
                            mean=mean, std=std, amp=amp, channels_last=channels_last,
                            augment_draw=augment_draw, progress=False, log_every=0)


def build_settings(name: str, args, iterations: int, amp: bool, channels_last: bool) -> RecoverySettings:
    size, _, _, _, dataset, lr, r_bn, jitter = SETTINGS[name]
    return recovery_settings(size, dataset, lr, r_bn, jitter, iterations, amp, channels_last, args.augment_draw)


def measure_variant(teacher, settings_for, ipc: int, classes_per_step: int, warmup: int, iters: int, device,
                    compile_model) -> dict:
    """Time one batch of ``classes_per_step`` classes x ``ipc`` images. ``settings_for(n)``: the
    RecoverySettings of an n-iteration run. A warm-up run of ``warmup`` iterations comes first
    (cuDNN autotuning and torch.compile happen there; its wall time is returned as ``warmup_s``),
    then ``iters`` timed iterations; ``sec_per_step`` is their mean."""
    groups = [Group(key=(0, c, 0), labels=[c] * ipc, bn_class=c) for c in range(classes_per_step)]
    cuda = device.type == "cuda"
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats(device)
    t0 = time.perf_counter()
    warm = Recoverer(teacher, settings_for(warmup), "class", device, compile_model=compile_model)
    warm.run(groups)  # cuDNN autotuning / torch.compile happen here
    warm.close()
    warmup_s = time.perf_counter() - t0
    rec = Recoverer(teacher, settings_for(iters), "class", device, compile_model=compile_model)
    if cuda:
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    rec.run(groups)  # returns CPU tensors: synchronised
    seconds = (time.perf_counter() - t0) / iters
    rec.close()
    return {"sec_per_step": seconds, "warmup_s": warmup_s,
            "peak_gpu_memory_bytes": torch.cuda.max_memory_allocated(device) if cuda else None}


def time_variant(teacher, name, ipc, classes_per_step, args, device, amp, channels_last, compile_model) -> float:
    """Seconds per optimisation step for one batch of ``classes_per_step`` classes x ipc images."""
    return measure_variant(teacher, lambda n: build_settings(name, args, n, amp, channels_last), ipc,
                           classes_per_step, args.warmup, args.iters, device, compile_model)["sec_per_step"]


def benchmark(args, device) -> list[dict]:
    rows = []
    variants = [("fp32", False, False, False)]
    if device.type == "cuda":
        variants = [("fp32", False, False, False), ("bf16+cl", True, True, False)]
        if args.compile:
            variants.append(("bf16+cl+compile", True, True, True))
    for name in args.settings:
        size, num_classes, tiny_stem, ipcs, *_ = SETTINGS[name]
        teacher = build_model("resnet18", num_classes, tiny_stem=tiny_stem, class_aware=True).to(device)
        for ipc in (args.ipc or ipcs):
            for label, amp, cl, comp in variants:
                base = None
                for k in args.classes_per_step:
                    try:
                        sec = time_variant(teacher, name, ipc, k, args, device, amp, cl, comp)
                    except torch.OutOfMemoryError:
                        print(f"{name} ipc {ipc} {label} K={k}: out of memory", flush=True)
                        torch.cuda.empty_cache()
                        break
                    ips = k * ipc / sec
                    base = base or (ips if k == 1 else None)
                    row = {"setting": name, "image_size": size, "ipc": ipc, "precision": label,
                           "classes_per_step": k, "batch_images": k * ipc, "sec_per_step": round(sec, 4),
                           "image_iters_per_s": round(ips, 1),
                           "speedup_vs_single_class_fp32": None}
                    rows.append(row)
                    if name == "imagenet1k" and ipc == 50:
                        row["projected_in1k_ipc50_4k_gpu_hours"] = round(IN1K_IPC50_IMAGE_ITERS / ips / 3600, 2)
                    print(json.dumps(row), flush=True)
    # speed-ups relative to the authors' loop (single class, fp32) of the same setting and ipc
    for row in rows:
        ref = [r for r in rows if r["setting"] == row["setting"] and r["ipc"] == row["ipc"]
               and r["precision"] == "fp32" and r["classes_per_step"] == 1]
        if ref:
            row["speedup_vs_single_class_fp32"] = round(row["image_iters_per_s"] / ref[0]["image_iters_per_s"], 2)
    return rows


def quality(args, device) -> None:
    """fp32 vs bf16(+channels_last): teacher top-1 and final CE/BN loss on a few recovered classes."""
    cfg_size = {"imagenet": 224, "tiny": 64}[args.dataset]
    name = "imagenet1k" if args.dataset == "imagenet" else "tiny"
    teacher = build_model("resnet18", SETTINGS[name][1], tiny_stem=name == "tiny", class_aware=True,
                          weights=args.quality).to(device)
    ipc = (args.ipc or [10])[0]
    groups = [Group(key=(0, c, 0), labels=[c] * ipc, bn_class=c) for c in range(args.quality_classes)]
    for label, amp, cl in (("fp32", False, False), ("bf16+cl", True, True)):
        s = build_settings(name, args, args.quality_iters, amp, cl)
        rec = Recoverer(teacher, s, "class", device)
        t0 = time.perf_counter()
        r = rec.run(groups)
        rec.close()
        print(json.dumps({"variant": label, "image_size": cfg_size, "classes": len(groups), "ipc": ipc,
                          "iterations": args.quality_iters, "teacher_top1": round(100 * float(r.correct.float().mean()), 2),
                          "ce": round(float(r.ce.mean()), 4), "bn_loss": round(float(r.bn.mean()), 4),
                          "seconds": round(time.perf_counter() - t0, 1)}), flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="auto")
    p.add_argument("--settings", nargs="*", default=list(SETTINGS), choices=list(SETTINGS))
    p.add_argument("--ipc", nargs="*", type=int, default=None, help="override the settings' ipc values")
    p.add_argument("--classes-per-step", nargs="*", type=int, default=[1, 2, 5, 10, 20],
                   help="K values; K=1 is the authors' single-class loop")
    p.add_argument("--iters", type=int, default=10, help="timed optimisation steps per variant")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--compile", action="store_true", help="also time torch.compile (CUDA)")
    p.add_argument("--augment-draw", default="shared", choices=("shared", "per_group"))
    p.add_argument("--json", default=None, help="write all rows to this file")
    p.add_argument("--quality", default=None, metavar="TEACHER", help="run the fp32-vs-bf16 quality check")
    p.add_argument("--dataset", default="imagenet", choices=("imagenet", "tiny"))
    p.add_argument("--quality-classes", type=int, default=10)
    p.add_argument("--quality-iters", type=int, default=1000)
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    from lpld.utils.runtime import resolve_device
    device = resolve_device(args.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        print(f"device: {torch.cuda.get_device_name(device)}, torch {torch.__version__}", flush=True)
    else:
        print(f"device: cpu ({platform.processor() or platform.machine()}), {torch.get_num_threads()} threads, "
              f"torch {torch.__version__}", flush=True)
    if args.quality:
        quality(args, device)
        return
    rows = benchmark(args, device)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)
    print("\nsetting     ipc  precision        K  images  s/step   img-it/s  x single  IN1K-IPC50 GPU-h")
    for r in rows:
        print(f"{r['setting']:<11} {r['ipc']:>3}  {r['precision']:<15} {r['classes_per_step']:>3} {r['batch_images']:>6}"
              f"  {r['sec_per_step']:>7.3f} {r['image_iters_per_s']:>9.1f}  {r['speedup_vs_single_class_fp32'] or '':>8}"
              f"  {r.get('projected_in1k_ipc50_4k_gpu_hours', ''):>8}")


if __name__ == "__main__":
    main()
