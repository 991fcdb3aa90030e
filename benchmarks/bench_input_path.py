"""Input path of student training and relabel: PIL views in DataLoader workers vs views cut on the
device from a decoded uint8 bank (``--input-path device``).

Per image, at 224 px and 64 px, batch 128, recorded RandomResizedCrop + flip + CutMix:

* PIL path, CPU microseconds: decode + crop/resize/flip to uint8 (what a worker does), and the
  same from decoded images (``--cache-images``);
* device path, CPU microseconds the host spends per image: the same operators run on 2 x 2-pixel
  tensors (the arithmetic vanishes; what remains is issuing them: the host side of a GPU run,
  without CUDA's kernel-launch latency, which is not measured here) and the number of operators
  per batch; also the CPU time when the CPU itself is the device (it then does the arithmetic,
  in float64);
* CPU cores each path needs to feed 10,000 images/s at 224 px;
* fidelity: largest pixel difference between the two paths' views, and, with ``--teacher``, the
  largest difference of a teacher's logits on the replayed, normalised and mixed batches.

    python benchmarks/bench_input_path.py [--teacher T.pth --teacher-classes 10 --teacher-size 32
                                           --images-dir outputs/demo/data/train]
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

import numpy as np
import torch
from PIL import Image
from torch.utils._python_dispatch import TorchDispatchMode

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from lpld.augment import apply_mix, normalize_views, sample_batch_params, views_uint8  # noqa: E402
from lpld.data import ImageFolder, load_rgb, normalization  # noqa: E402
from lpld.device_views import ImageBank, cut_views  # noqa: E402


class CountOps(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.ops = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops += 1
        return func(*args, **(kwargs or {}))


def make_images(folder: str, count: int, size: int) -> list[str]:
    """Smooth random images saved as JPEG (quality 75, as recover writes distilled images)."""
    rng = np.random.default_rng(0)
    os.makedirs(folder, exist_ok=True)
    paths = []
    for k in range(count):
        small = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
        img = Image.fromarray(small).resize((size, size), Image.BICUBIC)
        path = os.path.join(folder, f"{k:04d}.jpg")
        img.save(path, quality=75)
        paths.append(path)
    return paths


def records(paths_sizes, batch: int, count: int, size: int, mix: str = "cutmix"):
    rng = np.random.default_rng(1)
    out = []
    for b in range(count):
        idx = rng.integers(0, len(paths_sizes), batch).tolist()
        out.append(sample_batch_params(b, idx, [paths_sizes[i] for i in idx], seed=0, size=size, mix_type=mix))
    return out


def cpu_us(fn, repeats: int) -> float:
    fn()
    t = time.process_time()
    for _ in range(repeats):
        fn()
    return (time.process_time() - t) / repeats * 1e6


def prepare(size: int, args, tmp: str):
    """``args.images`` JPEGs of ``size`` px under ``tmp``, decoded, and ``args.batches`` recorded
    batches of ``args.batch`` views: (paths, decoded images, records)."""
    paths = make_images(os.path.join(tmp, f"img{size}"), args.images, size)
    decoded = [load_rgb(p) for p in paths]
    return paths, decoded, records([im.size for im in decoded], args.batch, args.batches, size)


def device_views(bank, recs, mean, std):
    """The device path of a batch list: views cut from ``bank``, normalised and mixed."""
    def run():
        for r in recs:
            apply_mix(normalize_views(bank.views(r), mean, std), r)
    return run


def device_wall_us(paths, recs, size: int, device: torch.device, repeats: int) -> float:
    """Wall microseconds per view of the device path on ``device`` (a GPU: its kernels included,
    synchronised before and after), from a bank decoded onto that device."""
    mean, std = normalization("imagenet")
    bank = ImageBank.from_paths(paths, device, size, threads=1)
    run = device_views(bank, recs, mean, std)
    run()  # warm-up: allocator, kernel selection
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    t = time.perf_counter()
    for _ in range(repeats):
        run()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return (time.perf_counter() - t) / (repeats * sum(len(r.image_indices) for r in recs)) * 1e6


def speed(size: int, args, tmp: str, cpu_compute: bool = True, prepared=None) -> dict:
    """CPU microseconds per view of each path (see the module docstring); ``cpu_compute=False``
    leaves out the device path computed on this CPU (slow at 224 px, and beside the point on a
    machine with a GPU). ``prepared``: the output of :func:`prepare` to measure on."""
    paths, decoded, recs = prepared or prepare(size, args, tmp)
    mean, std = normalization("imagenet")

    def pil_decode():
        for r in recs:
            views_uint8([load_rgb(paths[i]) for i in r.image_indices.tolist()], r.crops, r.flips, None, size)

    def pil_cached():
        for r in recs:
            views_uint8([decoded[i] for i in r.image_indices.tolist()], r.crops, r.flips, None, size)

    cpu_bank = ImageBank.from_paths(paths, torch.device("cpu"), size, threads=1)
    # the same operators on 2 x 2 pixels: what remains is the host's cost of issuing them
    tiny_bank = ImageBank(torch.zeros(len(paths), 3, 2, 2, dtype=torch.uint8), torch.full((len(paths), 2), 2), 2)

    n = args.batch * args.batches
    out = {"pil_decode": cpu_us(pil_decode, args.repeats) / n, "pil_cached": cpu_us(pil_cached, args.repeats) / n,
           "device_host": cpu_us(device_views(tiny_bank, recs, mean, std), args.repeats * 5) / n}
    if cpu_compute:
        out["device_on_cpu"] = cpu_us(device_views(cpu_bank, recs, mean, std), 1) / n
    with CountOps() as ops:
        device_views(tiny_bank, recs, mean, std)()
    out["ops_per_batch"] = ops.ops / args.batches
    diffs = [int((cpu_bank.views(r).int() - views_uint8([decoded[i] for i in r.image_indices.tolist()], r.crops,
                                                          r.flips, None, size).int()).abs().max()) for r in recs]
    out["max_pixel_diff"] = max(diffs)
    return out


def teacher_check(args) -> None:
    from lpld.models import build_model
    images = ImageFolder(args.images_dir)
    decoded = [load_rgb(p) for p, _ in images.samples]
    bank = ImageBank.from_folder(images, torch.device("cpu"), args.teacher_size)
    teacher = build_model("resnet18", args.teacher_classes, weights=args.teacher).eval()
    mean, std = normalization("demo")
    worst_pixel = worst_logit = 0.0
    views = 0
    for mix in ("cutmix", "mixup"):
        for r in records([im.size for im in decoded], args.batch, args.teacher_batches, args.teacher_size, mix):
            pil = views_uint8([decoded[i] for i in r.image_indices.tolist()], r.crops, r.flips, None, args.teacher_size)
            dev = bank.views(r)
            worst_pixel = max(worst_pixel, float((pil.int() - dev.int()).abs().max()))
            with torch.no_grad():
                a = teacher(apply_mix(normalize_views(pil, mean, std), r))
                b = teacher(apply_mix(normalize_views(dev, mean, std), r))
            worst_logit = max(worst_logit, float((a - b).abs().max()))
            views += pil.shape[0]
    print(f"fidelity on {len(images)} images of {args.images_dir} ({views} replayed views, CutMix and MixUp, "
          f"{args.teacher_size} px): max pixel diff {worst_pixel:.0f}; teacher {args.teacher}: max logit diff "
          f"{worst_logit:.3g}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[224, 64])
    p.add_argument("--images", type=int, default=256, help="distinct source images per size")
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--batches", type=int, default=2)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--teacher", default=None)
    p.add_argument("--teacher-classes", type=int, default=10)
    p.add_argument("--teacher-size", type=int, default=32)
    p.add_argument("--teacher-batches", type=int, default=4)
    p.add_argument("--images-dir", default=None, help="image folder for the teacher check (class sub-folders)")
    args = p.parse_args()
    torch.set_num_threads(1)
    print(f"torch {torch.__version__}, Pillow {Image.__version__}, 1 thread; batch {args.batch}, "
          f"{args.batches} batches x {args.repeats} repeats; CPU time (process_time) per image")
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for size in args.sizes:
            r = results[size] = speed(size, args, tmp)
            print(f"{size:4d} px: PIL decode+view {r['pil_decode']:8.1f} us | PIL view (decoded) {r['pil_cached']:8.1f} us"
                  f" | device path, host side {r['device_host']:6.1f} us ({r['ops_per_batch']:.0f} operators per "
                  f"batch) | device path computed on this CPU {r['device_on_cpu']:8.1f} us | max pixel diff "
                  f"{r['max_pixel_diff']}")
    if 224 in results:
        r = results[224]
        for name, key in (("PIL decode+view", "pil_decode"), ("PIL view (decoded)", "pil_cached"),
                          ("device path, host side", "device_host")):
            print(f"cores to feed 10,000 img/s at 224 px, {name}: {r[key] * 1e4 / 1e6:.1f}")
        print(f"device path host side vs PIL decode+view: {r['pil_decode'] / r['device_host']:.0f}x fewer CPU-us; "
              f"vs PIL view from decoded images: {r['pil_cached'] / r['device_host']:.0f}x")
    if args.teacher:
        teacher_check(args)


if __name__ == "__main__":
    main()
