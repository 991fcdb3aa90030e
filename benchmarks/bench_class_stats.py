#!/usr/bin/env python
"""Cost of the class-statistics pass vs a plain eval forward, and vs a per-class Python loop.

    python benchmarks/bench_class_stats.py                       # ImageNet-1K setting: 1000 classes, b256, 224 px
    python benchmarks/bench_class_stats.py --batch-size 64 --image-size 112 --repeats 3   # quick CPU run

Prints seconds per batch for: plain eval forward; forward with class statistics (ours, vectorised
with index_add); forward with the authors'-style loop over the classes present in the batch.
Goal: ours <= 1.3x a plain forward on a GPU.
"""
from __future__ import annotations

import argparse
import time

import torch

from lpld.models import ClassAwareBatchNorm2d, build_model, class_labels


def loop_update(self, x, labels):
    """Reference: one class at a time, as the authors' ClassAwareBatchNorm2d."""
    m = self.momentum
    for c in labels.unique().tolist():
        xc = x[labels == c]
        mean = xc.mean((0, 2, 3))
        var = xc.transpose(0, 1).reshape(x.shape[1], -1).var(1, unbiased=False)
        self.class_running_mean[c] = (1 - m) * self.class_running_mean[c] + m * mean
        self.class_running_var[c] = (1 - m) * self.class_running_var[c] + m * var


def timed(fn, device, repeats):
    fn()  # warm-up
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(repeats):
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - t0) / repeats


def measure(arch: str, num_classes: int, batch_size: int, image_size: int, device: torch.device, repeats: int,
            loop_repeats: int | None = None) -> dict:
    """Seconds per batch of a plain eval forward, of the forward with class statistics (ours) and of
    the forward with the per-class loop, on the same batch; channels_last on CUDA (as the stage)."""
    model = build_model(arch, num_classes, class_aware=True).to(device).eval()
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    x = torch.randn(batch_size, 3, image_size, image_size, device=device)
    if device.type == "cuda":
        x = x.to(memory_format=torch.channels_last)
    y = torch.randint(0, num_classes, (batch_size,), device=device)

    @torch.no_grad()
    def plain():
        model(x)

    @torch.no_grad()
    def with_stats():
        with class_labels(model, y):
            model(x)

    t_plain = timed(plain, device, repeats)
    t_ours = timed(with_stats, device, repeats)
    original = ClassAwareBatchNorm2d._update_class_stats
    ClassAwareBatchNorm2d._update_class_stats = torch.no_grad()(loop_update)
    try:
        t_loop = timed(with_stats, device, loop_repeats or max(1, repeats // 2))
    finally:
        ClassAwareBatchNorm2d._update_class_stats = original
    return {"plain_s": t_plain, "ours_s": t_ours, "loop_s": t_loop, "classes_present": len(y.unique())}


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--num-classes", type=int, default=1000)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: default)")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    r = measure("resnet18", args.num_classes, args.batch_size, args.image_size, device, args.repeats)
    t_plain, t_ours, t_loop = r["plain_s"], r["ours_s"], r["loop_s"]
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({torch.get_num_threads()} threads)"
    print(f"device: {name}; torch {torch.__version__}; ResNet-18, {args.num_classes} classes, "
          f"batch {args.batch_size}, {args.image_size} px, {r['classes_present']} classes present")
    print(f"plain eval forward          {t_plain * 1e3:9.1f} ms/batch  1.00x")
    print(f"with class stats (ours)     {t_ours * 1e3:9.1f} ms/batch  {t_ours / t_plain:.2f}x")
    print(f"with class stats (loop ref) {t_loop * 1e3:9.1f} ms/batch  {t_loop / t_plain:.2f}x")


if __name__ == "__main__":
    main()
