"""Student-training throughput: soft labels loaded from the store vs. the same loop with the labels
in memory (goal: label loading costs < 5% of step time).

Both variants run the real training step of ``lpld.validate.train`` (``train_one_epoch``: replayed
images from the DataLoader, forward/backward, optimiser step) on a synthetic distilled set:

* ``store``  : each step's batch record (fp16 logits + crop/flip/mix parameters) is read from the
               memory-mapped label store in the DataLoader workers -- what a real run does;
* ``memory`` : all records are read once beforehand and served from a dict -- no label I/O.

It also times ``store.read()`` alone and reports it as a share of the measured step time (the cost
if loading were not overlapped with compute at all).

    python benchmarks/bench_validate.py                        # CPU, small setting
    python benchmarks/bench_validate.py --device cuda --size 224 --classes 1000 --batch-size 128 \
        --images 2000 --workers 8 --steps 60                   # ImageNet-1K-like, on a GPU
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import types

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from lpld.augment import sample_batch_params  # noqa: E402
from lpld.data import ImageFolder, normalization  # noqa: E402
from lpld.labels import LabelStoreWriter, open_label_store, plan_batches  # noqa: E402
from lpld.models import build_model  # noqa: E402
from lpld.utils.runtime import resolve_device, to_channels_last  # noqa: E402
from lpld.validate.distributed import DistInfo  # noqa: E402
from lpld.validate.loader import BatchInputs, PlannedBatchSampler, SoftLabelBatches, build_train_loader  # noqa: E402
from lpld.validate.optim import build_optimizer  # noqa: E402
from lpld.validate.pruning import PruningPlan  # noqa: E402
from lpld.validate.train import train_one_epoch  # noqa: E402


def make_images(root: str, count: int, classes: int, size: int) -> None:
    rng = np.random.default_rng(0)
    per_class = max(1, count // classes)
    for k in range(count):
        folder = os.path.join(root, f"c{min(k // per_class, classes - 1):04d}")
        os.makedirs(folder, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(os.path.join(folder, f"{k:05d}.png"))


def make_store(train_dir: str, out: str, args) -> None:
    images = ImageFolder(train_dir)
    n = len(images)
    bpe, planned, drop_last = plan_batches(n, args.batch_size, args.epochs, 0.0)
    manifest = dict(dataset="imagefolder", teacher="random", seed=0, batch_size=args.batch_size, epochs=args.epochs,
                    batches_per_epoch=bpe, planned_batches=planned, prune_ratio=0.0, mix_type="cutmix",
                    num_classes=args.classes, num_images=n, image_size=args.size, cutout=False, drop_last=drop_last,
                    logits_dtype="float16", min_scale_crops=0.08, max_scale_crops=1.0, mixup_alpha=0.8,
                    cutmix_alpha=1.0, normalize=True, image_list_sha1="", amp=False)
    g = torch.Generator().manual_seed(0)
    sizes = [(args.size, args.size)] * args.batch_size
    with LabelStoreWriter(out, manifest, resume=False) as w:
        bid = 0
        for _ in range(args.epochs):
            order = torch.randperm(n, generator=g).tolist()
            for k in range(bpe):
                idx = order[k * args.batch_size:(k + 1) * args.batch_size]
                rec = sample_batch_params(bid, idx, sizes[:len(idx)], seed=0, size=args.size, mix_type="cutmix")
                rec.logits = torch.randn(len(idx), args.classes, generator=g).half()
                w.write(rec)
                bid += 1


class InMemoryStore:
    """The label store with every record read beforehand (no label I/O while training)."""

    def __init__(self, store) -> None:
        self.records = {b: store.read(b) for b in range(store.num_batches)}

    def read(self, batch_id: int):
        return self.records[batch_id]


class InMemoryBatches(SoftLabelBatches):
    def __init__(self, *args, records=None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.records = records

    @property
    def store(self):
        return self.records


def run(variant: str, args, train_dir: str, label_dir: str, device: torch.device) -> dict:
    mean, std = normalization("imagenet")
    images = ImageFolder(train_dir)
    store = open_label_store(label_dir)
    if variant == "memory":
        dataset = InMemoryBatches(images, label_dir, args.size, mean, std, records=InMemoryStore(store))
    else:
        dataset = SoftLabelBatches(images, label_dir, args.size, mean, std)
    plan = PruningPlan(store.batches_per_epoch, args.epochs, seed=0)
    sampler = PlannedBatchSampler(plan, max_steps=args.steps)
    loader = build_train_loader(dataset, sampler, workers=args.workers, pin_memory=device.type == "cuda")
    torch.manual_seed(0)
    cuda = device.type == "cuda"
    model = to_channels_last(build_model(args.model, args.classes).to(device), cuda)
    cfg = types.SimpleNamespace(gradient_accumulation_steps=1, batch_size=args.batch_size, progress=False,
                                train_epochs=args.epochs, temperature=20.0, label_smoothing=0.0, amp=cuda,
                                log_batches=False, log_interval=20, sgd=False, adamw_lr=1e-3,
                                adamw_weight_decay=0.01, output_dir=".")
    opt = build_optimizer(model, cfg, device)
    inputs = BatchInputs(device, mean, std, channels_last=cuda)
    sampler.set_epoch(0)
    train_one_epoch(model, None, opt, loader, device, cfg, "kl", 0, DistInfo(), inputs)  # warm-up (workers, cudnn)
    sampler.set_epoch(1)
    stats = train_one_epoch(model, None, opt, loader, device, cfg, "kl", 1, DistInfo(), inputs)
    return stats


def time_reads(label_dir: str, count: int) -> float:
    store = open_label_store(label_dir)
    ids = np.random.default_rng(0).integers(0, store.num_batches, size=count)
    store.read(0)
    t = time.perf_counter()
    for b in ids:
        store.read(int(b))
    return (time.perf_counter() - t) / count


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--model", default="resnet18")
    p.add_argument("--size", type=int, default=32)
    p.add_argument("--classes", type=int, default=1000)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--images", type=int, default=640)
    p.add_argument("--epochs", type=int, default=3, help="stored epochs")
    p.add_argument("--steps", type=int, default=10, help="timed steps per variant")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--repeats", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    with tempfile.TemporaryDirectory() as tmp:
        train_dir, label_dir = os.path.join(tmp, "images"), os.path.join(tmp, "labels")
        make_images(train_dir, args.images, min(args.classes, args.images), args.size)
        make_store(train_dir, label_dir, args)
        read_s = time_reads(label_dir, 50)
        results = {"store": [], "memory": []}
        for r in range(args.repeats):  # interleaved, alternating order, to spread machine noise
            for variant in (("memory", "store") if r % 2 == 0 else ("store", "memory")):
                results[variant].append(run(variant, args, train_dir, label_dir, device))
        print(f"device {device} ({torch.cuda.get_device_name(device) if device.type == 'cuda' else 'CPU'}), "
              f"torch {torch.__version__}, {args.model}, {args.size} px, batch {args.batch_size}, "
              f"{args.classes} classes, workers {args.workers}, {args.steps} steps x {args.repeats}")
        best = {}
        for variant, runs in results.items():
            ips = max(r["images_per_s"] for r in runs)
            best[variant] = ips
            waits = ", ".join(f"{r['data_wait_frac'] * 100:.1f}%" for r in runs)
            print(f"  {variant:6s}: {ips:9.1f} images/s (best of {len(runs)}); data wait {waits}")
        step_s = args.batch_size / best["store"]
        print(f"  label loading overhead (store vs memory): {(1 - best['store'] / best['memory']) * 100:+.1f}% of throughput")
        print(f"  store.read(): {read_s * 1e3:.2f} ms per batch = {read_s / step_s * 100:.2f}% of a "
              f"{step_s * 1e3:.0f} ms step if not overlapped")


if __name__ == "__main__":
    main()
