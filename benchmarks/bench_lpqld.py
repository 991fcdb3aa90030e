#!/usr/bin/env python
"""Compact labels (LPQLD) benchmark (not a test): bytes on disk of the label stores of one
ImageNet-1K-shaped relabel run, the targets of regenerated augmentation, and the 8-bit distortion.

    python benchmarks/bench_lpqld.py [--ipc 10] [--epochs 10] [--topk 10] [--prune 0.9]
                                     [--teacher CKPT | --teacher-epochs 1] [--dir /tmp/x]

1. bytes: a synthetic run shaped like ImageNet-1K (1,000 classes, ``--ipc`` images per class of
   224 x 224 px, batch 128, CutMix, ``--epochs`` relabel epochs; random teacher logits, real
   augmentation records drawn as relabel draws them) is written as
   (a) the full store: prune 0, all classes, fp16 logits, recorded augmentation;
   (b) MR-k at ``--prune``: recorded augmentation; (c) regenerated augmentation; (d) regenerated
   with 8-bit values; and (e) the same batches in the LPQLD code's flat file layout.
   Every file of every store is counted (manifests, .npy headers, progress, checksums). Both the
   full store and the pruned ones grow linearly with the epochs, so the ratios hardly depend on
   ``--epochs`` (only the fixed ~3 KB of manifests and headers does not scale).
2. targets: every batch of (c) and (d), read with the images' sizes, against (b): the regenerated
   augmentation must equal the recorded one field by field, and the top-k values and classes of
   (c) the recorded ones bit for bit (so the training targets are identical).
3. 8-bit distortion: KL(fp16 target || 8-bit target) at T = 20 and T = 2 (``uint8_distortion``) on
   the demo teacher's logits on the demo validation images (10 classes: MR-2, MR-5, all 10; the
   teacher is trained here for ``--teacher-epochs`` on 400 demo images unless ``--teacher`` names
   one, e.g. ``lpld demo``'s squeeze/teacher.pth), and
   on the synthetic 1,000-class logits of (1) for MR-10 / MR-100.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import shutil
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from lpld.augment import sample_batch_params  # noqa: E402
from lpld.labels import LabelStoreWriter, open_label_store, plan_batches  # noqa: E402
from lpld.labels.lpqld_format import LPQLDStoreWriter  # noqa: E402
from lpld.labels.topk import select_topk, topk_target, uint8_distortion  # noqa: E402
from lpld.augment import sampler_orders  # noqa: E402

B, C, SIZE = 128, 1000, 224


def manifest_for(num_images: int, epochs: int, prune: float, **labels) -> dict:
    per_epoch, planned, drop_last = plan_batches(num_images, B, epochs, prune)
    return {"dataset": "imagenet", "teacher": {"arch": "synthetic"}, "seed": 42, "batch_size": B, "epochs": epochs,
            "batches_per_epoch": per_epoch, "planned_batches": planned, "prune_ratio": prune, "drop_last": drop_last,
            "mix_type": "cutmix", "mixup_alpha": 0.8, "cutmix_alpha": 1.0, "num_classes": C,
            "num_images": num_images, "image_size": SIZE, "min_scale_crops": 0.08, "max_scale_crops": 1.0,
            "cutout": False, "logits_dtype": "float16", "amp": False, **labels}


def teacher_logits(batch_id: int, rows: int) -> torch.Tensor:
    """Random logits (std 4) of batch ``batch_id``, the same in every store of the run."""
    return torch.randn(rows, C, generator=torch.Generator().manual_seed(batch_id)) * 4


def write_run(out: str, num_images: int, epochs: int, prune: float, k: int) -> dict[str, str]:
    """Write the stores (a)-(e) in one pass over the batches; returns name -> path."""
    sizes = [(SIZE, SIZE)] * num_images  # distilled ImageNet images are 224 x 224
    stores = {
        "full fp16 (prune 0, recorded)": manifest_for(num_images, epochs, 0.0),
        f"MR-{k} prune {prune}, recorded": manifest_for(num_images, epochs, prune, label_topk=k),
        f"MR-{k} prune {prune}, regenerated": manifest_for(num_images, epochs, prune, label_topk=k,
                                                           augmentation="regenerated"),
        f"MR-{k} prune {prune}, regenerated + uint8": manifest_for(num_images, epochs, prune, label_topk=k,
                                                                   augmentation="regenerated", label_codec="uint8"),
        f"MR-{k} prune {prune}, LPQLD code's files": manifest_for(num_images, epochs, prune, label_topk=k),
    }
    paths = {name: os.path.join(out, f"store{i}") for i, name in enumerate(stores)}
    writers = {}
    for name, m in stores.items():
        cls = LPQLDStoreWriter if "LPQLD" in name else LabelStoreWriter
        writers[name] = cls(paths[name], m, resume=False, commit_every=256)
    orders = sampler_orders(num_images, 42, epochs)
    planned = max(m["planned_batches"] for m in stores.values())
    for gid in range(planned):
        drawn = {}  # the pruned stores share one plan (drop_last): draw their batch once
        for name, w in writers.items():
            m = stores[name]
            if gid >= m["planned_batches"]:
                continue
            per_epoch = m["batches_per_epoch"]
            if per_epoch not in drawn:
                e, i = divmod(gid, per_epoch)
                idx = orders[e, i * B:(i + 1) * B].tolist()
                drawn[per_epoch] = (sample_batch_params(gid, idx, [sizes[j] for j in idx], seed=42, size=SIZE,
                                                        mix_type="cutmix"), teacher_logits(gid, len(idx)))
            rec, logits = drawn[per_epoch]
            rec = dataclasses.replace(rec)
            if m.get("label_topk"):
                rec.logits, rec.topk_indices = select_topk(logits, k, values_dtype=torch.float32)
            else:
                rec.logits, rec.topk_indices = logits.half(), None
            w.write(rec)
    for w in writers.values():
        w.close()
    return paths


def folder_bytes(path: str) -> tuple[int, int]:
    """(bytes of every file, files) under ``path``."""
    total = files = 0
    for root, _, names in os.walk(path):
        for n in names:
            total += os.path.getsize(os.path.join(root, n))
            files += 1
    return total, files


def check_targets(paths: dict[str, str], num_images: int, k: int) -> list[str]:
    names = list(paths)
    recorded = open_label_store(paths[names[1]])
    lines = []
    for name in names[2:4]:
        store = open_label_store(paths[name])
        store.attach_images([(SIZE, SIZE)] * num_images)
        same_aug = same_labels = 0
        worst_kl = 0.0
        for gid in range(recorded.num_batches):
            a, b = recorded.read(gid), store.read(gid)
            same_aug += all(torch.equal(getattr(a, f), getattr(b, f)) for f in ("image_indices", "crops", "flips",
                                                                                "mix_index")) \
                and a.mix_lam == b.mix_lam and a.mix_bbox == b.mix_bbox
            same_labels += torch.equal(a.topk_indices, b.topk_indices) and torch.equal(a.logits.float(),
                                                                                        b.logits.float())
            if "uint8" in name:
                p = topk_target(a.logits, a.topk_indices, C, 2.0)
                q = topk_target(b.logits, b.topk_indices, C, 2.0)
                kl = (p * (torch.log(p.clamp_min(1e-30)) - torch.log(q.clamp_min(1e-30)))).sum(1).max()
                worst_kl = max(worst_kl, float(kl))
        n = recorded.num_batches
        extra = (f"; top-k values within 8 bits: worst row KL(fp16 || uint8) at T=2 = {worst_kl:.2e}"
                 if "uint8" in name else f"; top-k values and classes identical {same_labels}/{n}")
        lines.append(f"  {name}: augmentation identical to the recorded store in {same_aug}/{n} batches{extra}")
    return lines


def demo_teacher_logits(teacher: str | None, teacher_epochs: int, work: str) -> tuple[torch.Tensor, str]:
    """Logits of the demo teacher on the demo validation images (trained here when not given)."""
    from lpld.config import load_yaml, resolve
    from lpld.data import make_demo_dataset
    from lpld.data.transforms import val_transform
    from lpld.data import ImageFolder
    from lpld.models import build_model, load_weights
    root = make_demo_dataset(os.path.join(work, "demo"), train_per_class=40, val_per_class=20)
    note = f"checkpoint {teacher}"
    if teacher is None:
        from lpld.squeeze import TRAIN_SCHEMA, run_teacher_training
        repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        layers = [(p, load_yaml(os.path.join(repo, p), ("common", "squeeze")))
                  for p in ("squeeze/configs/demo.yaml", "squeeze/configs/demo_train.yaml")]
        cfg = resolve(TRAIN_SCHEMA, layers + [("bench", {"data_path": root, "output_dir": os.path.join(work, "sq"),
                                                          "epochs": teacher_epochs, "device": "cpu",
                                                          "progress": False})])
        metrics = run_teacher_training(cfg)
        teacher = os.path.join(work, "sq", "teacher.pth")
        note = (f"trained here for {teacher_epochs} epochs on 10 classes x 40 images, "
                f"val top-1 {metrics['val_top1']:.1f}%")
    model = build_model("resnet18", 10)
    load_weights(model, teacher)
    model.eval()
    val = ImageFolder(os.path.join(root, "val"), val_transform(32, "demo"))
    loader = torch.utils.data.DataLoader(val, batch_size=256)
    with torch.no_grad():
        logits = torch.cat([model(x) for x, _ in loader])
    return logits, note


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--ipc", type=int, default=10)
    p.add_argument("--epochs", type=int, default=10, help="relabel epochs (ImageNet recipe: 300)")
    p.add_argument("--topk", type=int, default=10)
    p.add_argument("--prune", type=float, default=0.9)
    p.add_argument("--teacher", default=None, help="demo teacher checkpoint (default: train one here)")
    p.add_argument("--teacher-epochs", type=int, default=1, help="epochs of the demo teacher trained here (its recipe "
                   "warms up in epoch 1; a 2-epoch run reaches the peak LR in epoch 2 and diverged when measured)")
    p.add_argument("--dir", default=None, help="work folder (default: a temporary one, removed)")
    args = p.parse_args()
    torch.set_num_threads(min(2, os.cpu_count() or 1))
    work = args.dir or tempfile.mkdtemp(prefix="bench_lpqld_")
    num_images = args.ipc * C
    try:
        t0 = time.perf_counter()
        paths = write_run(work, num_images, args.epochs, args.prune, args.topk)
        written = time.perf_counter() - t0
        full = folder_bytes(paths["full fp16 (prune 0, recorded)"])[0]
        per_epoch = plan_batches(num_images, B, args.epochs, 0.0)[0]
        print(f"1. bytes on disk: ImageNet-1K shape, IPC {args.ipc} ({num_images:,} images), batch {B}, {C} classes, "
              f"{args.epochs} relabel epochs ({per_epoch} batches/epoch at prune 0); written in {written:.0f} s")
        print(f"  {'store':<44} {'batches':>8} {'files':>6} {'bytes':>14} {'ratio':>8}")
        for name, path in paths.items():
            size, files = folder_bytes(path)
            store = open_label_store(path, num_classes=C)
            print(f"  {name:<44} {store.num_batches:>8,} {files:>6} {size:>14,} {'x%.1f' % (full / size):>8}")
        print("2. targets of regenerated augmentation")
        for line in check_targets(paths, num_images, args.topk):
            print(line)
        print("3. 8-bit distortion: KL(fp16 target || uint8 target) per row, mean / max")
        logits, note = demo_teacher_logits(args.teacher, args.teacher_epochs, work)
        print(f"  demo teacher ({note}), {logits.shape[0]} validation images, 10 classes:")
        for k in (2, 5, 10):
            values = select_topk(logits, k)[0]
            parts = [f"T={t:g}: {d.mean_kl:.2e} / {d.max_kl:.2e}" for t in (20.0, 2.0)
                     for d in (uint8_distortion(values, t),)]
            print(f"    MR-{k:<3} " + "   ".join(parts))
        synthetic = torch.cat([teacher_logits(g, B) for g in range(8)])
        print(f"  synthetic logits of (1) (std 4, {C} classes, {synthetic.shape[0]} rows):")
        for k in (10, 100):
            values = select_topk(synthetic, k)[0]
            parts = [f"T={t:g}: {d.mean_kl:.2e} / {d.max_kl:.2e}" for t in (20.0, 2.0)
                     for d in (uint8_distortion(values, t),)]
            print(f"    MR-{k:<3} " + "   ".join(parts))
        print(f"total {time.perf_counter() - t0:.0f} s")
    finally:
        if args.dir is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    np.set_printoptions(suppress=True)
    main()
