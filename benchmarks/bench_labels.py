#!/usr/bin/env python
"""Soft-label benchmark (not a test): read cost per batch, ours vs the authors' files, and the
generation rate.

    python benchmarks/bench_labels.py [--batches 200] [--classes 1000] [--batch-size 128] [--workers 8]
                                      [--gen-batches 6] [--gen-size 64] [--device cpu] [--dir /tmp/x]

1. read: a synthetic store of ``--batches`` batches (fp16 logits, crops, flips, CutMix params) is
   written in our format and converted to the authors' ``epoch_*/batch_*.tar`` layout; then every
   batch is read in random order (a) in one process and (b) by a DataLoader with ``--workers``
   workers, as a student does. Reported: ms per batch (in-worker read time and loader throughput).
   Files were just written, so the page cache is warm (the training steady state for a store that
   fits in RAM); a cold read adds the disk's time for ~256 KB per batch in both formats.
2. generate: labels per second of ``run_relabel`` on generated images with a random-init
   ResNet-18 teacher (``--gen-size`` px, Tiny stem below 128 px), split into the data side
   (load + crop + flip + CutMix, on the workers) and the teacher side.
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
import warnings

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch.utils.data import DataLoader, Dataset  # noqa: E402

from lpld.augment import BatchRecord  # noqa: E402
from lpld.labels import LabelStoreWriter, convert, open_label_store, plan_batches  # noqa: E402


def synthetic_store(path: str, batches: int, batch_size: int, classes: int) -> str:
    num_images = batches * batch_size
    per_epoch, planned, _ = plan_batches(num_images, batch_size, 1, 0.0)
    manifest = {"dataset": "synthetic", "teacher": None, "seed": 0, "batch_size": batch_size, "epochs": 1,
                "batches_per_epoch": per_epoch, "planned_batches": planned, "prune_ratio": 0.0,
                "mix_type": "cutmix", "num_classes": classes, "num_images": num_images, "image_size": 224,
                "cutout": False, "drop_last": False, "logits_dtype": "float16"}
    gen = torch.Generator().manual_seed(0)
    order = torch.randperm(num_images, generator=gen)
    with LabelStoreWriter(path, manifest, commit_every=64) as w:
        for k in range(planned):
            w.write(BatchRecord(
                batch_id=k, image_indices=order[k * batch_size:(k + 1) * batch_size], crops=torch.rand(batch_size, 4),
                flips=torch.rand(batch_size) < 0.5, mix_index=torch.randperm(batch_size), mix_lam=0.3,
                mix_bbox=(10, 20, 100, 120), logits=(torch.randn(batch_size, classes) * 5).half()))
    return path


class TimedReads(Dataset):
    """Item k: read batch ``ids[k]``; returns the logits, the seconds the read took, and whether this
    read opened the store in this worker (a one-off cost, reported apart)."""

    def __init__(self, path: str, ids: list[int]) -> None:
        self.path, self.ids, self.store = path, ids, None

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, k: int):
        t0 = time.perf_counter()
        opened = self.store is None
        if opened:  # opened lazily, once per worker
            self.store = open_label_store(self.path)
        rec = self.store.read(self.ids[k])
        return rec.logits, time.perf_counter() - t0, opened


def bench_read(path: str, workers: int, repeats: int = 3) -> dict:
    store = open_label_store(path)
    ids = [int(k) for k in np.random.default_rng(0).permutation(store.num_batches)]
    store.read(0)
    t0 = time.perf_counter()
    for _ in range(repeats):
        for k in ids:
            store.read(k)
    single = (time.perf_counter() - t0) / (repeats * len(ids))
    loader = DataLoader(TimedReads(path, ids * repeats), batch_size=None, num_workers=workers,
                        prefetch_factor=4, persistent_workers=False)
    steady, first = [], []
    t0, counted = None, 0
    for n, (_, dt, opened) in enumerate(loader):
        (first if opened else steady).append(dt)
        if n == 2 * workers:  # throughput after every worker has started and opened the store
            t0 = time.perf_counter()
        elif n > 2 * workers:
            counted += 1
    wall = (time.perf_counter() - t0) / max(1, counted)
    steady_ms = 1e3 * np.asarray(steady)
    return {"format": store.format, "single_ms": 1e3 * single, "worker_median_ms": float(np.median(steady_ms)),
            "worker_mean_ms": float(steady_ms.mean()), "worker_p90_ms": float(np.percentile(steady_ms, 90)),
            "open_ms": 1e3 * float(np.mean(first)), "loader_ms_per_batch": 1e3 * wall, "bytes": store.nbytes(),
            "batches": store.num_batches}


def bench_generate(root: str, batches: int, size: int, batch_size: int, workers: int, device: str) -> dict:
    from lpld.data import make_demo_dataset
    from lpld.models import build_model
    from lpld.relabel import run_relabel
    from lpld.augment import sampler_orders
    from lpld.relabel.generate import AugmentedBatches, build_manifest, normalize_config
    from lpld.data import ImageFolder
    data = make_demo_dataset(os.path.join(root, "gen_data"), num_classes=10, image_size=size,
                             train_per_class=-(-batches * batch_size // 10), val_per_class=1, seed=0)
    tiny = size < 128
    cfg = {"dataset": "imagefolder", "train_dir": os.path.join(data, "train"), "batch_size": batch_size,
           "epochs": 1, "input_size": size, "mix_type": "cutmix", "output_dir": os.path.join(root, "gen_store"),
           "workers": workers, "progress": False, "device": device, "num_classes": 1000, "tiny_stem": tiny,
           "overwrite": True}
    teacher = build_model("resnet18", 1000, tiny_stem=tiny)
    t0 = time.perf_counter()
    out = run_relabel(cfg, teacher=teacher)
    total = time.perf_counter() - t0
    n = open_label_store(out).num_batches
    # data side alone, in this process (what one worker does per batch)
    ncfg = normalize_config(cfg)
    ds = ImageFolder(ncfg.train_dir)
    manifest = build_manifest(ncfg, ds, 1000)
    views = AugmentedBatches([p for p, _ in ds.samples], sampler_orders(len(ds), 42, 1), manifest, 0, n)
    t0 = time.perf_counter()
    for k in range(n):
        views[k]
    data_s = (time.perf_counter() - t0) / n
    x = views[0][0]
    teacher.eval()
    with torch.no_grad():
        teacher(x)
        t0 = time.perf_counter()
        for _ in range(2):
            teacher(x)
    teacher_s = (time.perf_counter() - t0) / 2
    return {"batches": n, "images_per_s": n * batch_size / total, "data_ms_per_batch_one_core": 1e3 * data_s,
            "teacher_ms_per_batch": 1e3 * teacher_s, "size": size, "batch_size": batch_size}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batches", type=int, default=200)
    p.add_argument("--classes", type=int, default=1000)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--workers", type=int, default=8)
    p.add_argument("--gen-batches", type=int, default=6)
    p.add_argument("--gen-size", type=int, default=64)
    p.add_argument("--gen-batch-size", type=int, default=64)
    p.add_argument("--gen-workers", type=int, default=2)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=1, help="torch threads")
    p.add_argument("--dir", default=None, help="scratch folder (default: a temporary one, removed after)")
    p.add_argument("--skip-generate", action="store_true")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore", message="This DataLoader will create")
    root = args.dir or tempfile.mkdtemp(prefix="bench_labels_")
    try:
        ours = synthetic_store(os.path.join(root, "ours"), args.batches, args.batch_size, args.classes)
        theirs = convert(ours, os.path.join(root, "authors"), to="authors", progress=False, overwrite=True)
        print(f"read: {args.batches} batches x {args.batch_size} x {args.classes} fp16, {args.workers} workers")
        for path in (ours, theirs):
            r = bench_read(path, args.workers)
            print(f"  {r['format']:8s} one process {r['single_ms']:.3f} ms/batch | in {args.workers} workers: median "
                  f"{r['worker_median_ms']:.3f}, mean {r['worker_mean_ms']:.3f}, p90 {r['worker_p90_ms']:.3f} ms/batch "
                  f"(first read incl. open {r['open_ms']:.1f} ms) | loader throughput {r['loader_ms_per_batch']:.3f} "
                  f"ms/batch | {r['bytes'] / 1e6:.1f} MB on disk")
        if not args.skip_generate:
            g = bench_generate(root, args.gen_batches, args.gen_size, args.gen_batch_size, args.gen_workers,
                               args.device)
            print(f"generate: {g['batches']} batches x {g['batch_size']} at {g['size']} px, ResNet-18 teacher, "
                  f"1000 classes, {args.gen_workers} workers, {args.device}: {g['images_per_s']:.1f} labelled "
                  f"views/s | data side {g['data_ms_per_batch_one_core']:.1f} ms/batch on one core | teacher "
                  f"{g['teacher_ms_per_batch']:.1f} ms/batch")
    finally:
        if args.dir is None:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
