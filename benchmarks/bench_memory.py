"""Memory of student training at ImageNet-1K scale: label index and store in every loader process,
shared memory per loader item, label bytes on disk.

Fabricates, at the sizes of ImageNet-1K IPC 50 (50,000 images, batch 128, 1000 classes):

* the authors' ``sampler_indices_epoch.json`` of a 300-epoch run (15 M image indices; the batch
  files of epoch 0 link to one real file), opened as the trainer opens it now (memory-mapped int32
  index, read per batch) and as it was opened before (``json.load`` in every process);
* a x40 store (prune ratio 0.975: 2,925 batches) in our format and in the authors';

and prints, for each, the main process's RSS above its baseline and each DataLoader worker's RSS
and anonymous memory above a worker of the same loader over a label-free dataset, after
``--reads`` random batch reads per worker; the shared-memory bytes of one loader item at the
ImageNet-1K config (now: uint8 views + fp16 logits; before: float32 normalised images + float32
logits); the label bytes on disk of the x40 store in both formats.

    python benchmarks/bench_memory.py                  # full ImageNet-1K sizes (~2 GB of scratch files)
    python benchmarks/bench_memory.py --images 5000 --epochs 30 --skip-store   # quick
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import tempfile
import time

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from lpld.augment import BatchRecord, replay_batch, sample_batch_params  # noqa: E402
from lpld.data import ImageFolder, load_rgb  # noqa: E402
from lpld.labels import AuthorsStoreWriter, LabelStoreWriter, open_label_store  # noqa: E402
from lpld.labels.authors import SAMPLER_JSON, batch_file  # noqa: E402
from lpld.utils.io import atomic_torch_save  # noqa: E402
from lpld.validate.loader import BatchRequest, SoftLabelBatches  # noqa: E402

MB = 1 << 20


def memory() -> tuple[int, int]:
    """(RSS, anonymous) of this process in bytes, from /proc/self/smaps_rollup. RSS also counts
    pages of memory-mapped files (page cache, shared by every process that maps them);
    anonymous memory is the process's own heap."""
    rss = anon = 0
    with open("/proc/self/smaps_rollup") as f:
        for line in f:
            key, _, rest = line.partition(":")
            kb = int(rest.split()[0]) * 1024 if rest.split() and rest.split()[0].isdigit() else 0
            if key == "Rss":
                rss = kb
            elif key == "Anonymous":
                anon = kb
    return rss, anon


class LegacyAuthorsIndex:
    """How the authors' json was read before: ``json.load`` into lists, in every process."""

    def __init__(self, json_path: str, batch_size: int) -> None:
        self.json_path, self.batch_size, self.orders = json_path, batch_size, None

    def __getstate__(self):
        return {**self.__dict__, "orders": None}  # each worker re-opened the store

    def read_indices(self, batch_id: int, per_epoch: int) -> torch.Tensor:
        if self.orders is None:
            with open(self.json_path) as f:
                self.orders = {int(k): v for k, v in json.load(f).items()}
        epoch, index = divmod(batch_id, per_epoch)
        return torch.tensor(self.orders[epoch][index * self.batch_size:(index + 1) * self.batch_size])


class ReadBatches(Dataset):
    """Item k: read ``reads`` random batches, return this worker's (RSS, USS)."""

    def __init__(self, source, num_batches: int, per_epoch: int, reads: int) -> None:
        self.source, self.num_batches, self.per_epoch, self.reads = source, num_batches, per_epoch, reads

    def __len__(self) -> int:
        return 1 << 20

    def __getitem__(self, k: int):
        rng = np.random.default_rng(k)
        for b in rng.integers(0, self.num_batches, self.reads):
            if self.source is None:
                continue
            if isinstance(self.source, LegacyAuthorsIndex):
                self.source.read_indices(int(b), self.per_epoch)
            else:
                self.source.read(int(b))
        gc.collect()
        return torch.tensor(memory())


def worker_memory(source, num_batches: int, per_epoch: int, workers: int, reads: int) -> list[tuple[int, int]]:
    """(RSS, USS) of each worker after its reads; the loader hands item k to worker k % workers."""
    loader = DataLoader(ReadBatches(source, num_batches, per_epoch, reads), batch_size=None, num_workers=workers,
                        prefetch_factor=1)
    out = []
    for k, item in enumerate(loader):
        out.append(tuple(int(v) for v in item))
        if k + 1 == workers:
            break
    del loader
    return out


def fabricate_index(root: str, images: int, epochs: int, batch_size: int) -> tuple[str, int]:
    """An authors' folder whose json lists ``epochs`` x ``images`` indices; epoch 0's batch files
    are links to one real batch (opening the store reads only its first batch)."""
    os.makedirs(os.path.join(root, "epoch_0"), exist_ok=True)
    per_epoch = images // batch_size  # full batches only: every link points at a batch of batch_size
    rng = np.random.default_rng(0)
    with open(os.path.join(root, SAMPLER_JSON), "w") as f:
        f.write("{")
        for e in range(epochs):
            f.write(f'{", " if e else ""}"{e}": [{", ".join(map(str, rng.permutation(images).tolist()))}]')
        f.write("}")
    first = batch_file(root, 0, 0)
    atomic_torch_save([torch.rand(batch_size, 4), torch.zeros(batch_size, dtype=torch.bool), None, None, None,
                     torch.zeros(batch_size, 1000, dtype=torch.float16)], first)
    for b in range(1, per_epoch):
        os.symlink(first, batch_file(root, 0, b))
    return root, per_epoch


def store_manifest(args, per_epoch: int, planned: int) -> dict:
    return dict(dataset="imagenet", teacher="random", seed=0, batch_size=args.batch_size, epochs=args.epochs,
                batches_per_epoch=per_epoch, planned_batches=planned, prune_ratio=args.prune, mix_type="cutmix",
                num_classes=args.classes, num_images=args.images, image_size=224, cutout=False, drop_last=True,
                logits_dtype="float16", min_scale_crops=0.08, max_scale_crops=1.0, mixup_alpha=0.8,
                cutmix_alpha=1.0, normalize=True, image_list_sha1="", amp=False)


def fabricate_store(path: str, fmt: str, args) -> object:
    per_epoch = args.images // args.batch_size  # drop_last with pruning, as the authors
    planned = int(args.epochs * per_epoch * (1 - args.prune))
    manifest = store_manifest(args, per_epoch, planned)
    writer = (LabelStoreWriter if fmt == "ours" else AuthorsStoreWriter)(path, manifest, resume=False, commit_every=256)
    gen = torch.Generator().manual_seed(0)
    orders = {}
    sizes = [(224, 224)] * args.batch_size
    for gid in range(planned):
        epoch, index = divmod(gid, per_epoch)
        if epoch not in orders:
            orders[epoch] = torch.randperm(args.images, generator=gen)
        idx = orders[epoch][index * args.batch_size:(index + 1) * args.batch_size]
        rec = sample_batch_params(gid, idx, sizes, seed=0, size=224, mix_type="cutmix")
        rec.logits = torch.randn(args.batch_size, args.classes, generator=gen).half()
        writer.write(rec)
    writer.close() if fmt == "ours" else writer.close({e: o.numpy() for e, o in orders.items()})
    return open_label_store(path)


def du(path: str) -> int:
    total = 0
    for root, _, files in os.walk(path):
        total += sum(os.lstat(os.path.join(root, f)).st_size for f in files)
    return total


def report(name: str, main_before: tuple, main_after: tuple, workers: list, baseline: list) -> None:
    base_rss = max(r for r, _ in baseline)
    base_uss = max(u for _, u in baseline)
    rss = [r - base_rss for r, _ in workers]
    anon = [u - base_uss for _, u in workers]
    print(f"  {name:38s} main +{(main_after[0] - main_before[0]) / MB:7.1f} MB RSS | per worker RSS "
          f"+{max(rss) / MB:7.1f} MB (max of {len(rss)}), of it anonymous +{max(anon) / MB:7.1f} MB")


def item_bytes(batch) -> int:
    total = 0
    for v in (batch if isinstance(batch, tuple) else (batch,)):
        if isinstance(v, torch.Tensor):
            total += v.numel() * v.element_size()
        elif isinstance(v, BatchRecord):
            total += sum(t.numel() * t.element_size() for t in (v.image_indices, v.crops, v.flips, v.cutout,
                                                                v.mix_index, v.logits) if t is not None)
    return total


def shm_section(args, tmp: str) -> None:
    """One loader item at the ImageNet-1K config, now and as it was before."""
    folder = os.path.join(tmp, "images")
    rng = np.random.default_rng(0)
    for k in range(args.batch_size):
        os.makedirs(os.path.join(folder, f"c{k % 10}"), exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (224, 224, 3), dtype=np.uint8)).save(os.path.join(folder, f"c{k % 10}", f"{k}.png"))
    images = ImageFolder(folder)
    label_dir = os.path.join(tmp, "shm_labels")
    small = argparse.Namespace(**{**vars(args), "images": args.batch_size, "epochs": 1, "prune": 0.0})
    per_epoch = 1
    writer = LabelStoreWriter(label_dir, {**store_manifest(small, per_epoch, 1), "drop_last": False}, resume=False)
    rec = sample_batch_params(0, list(range(args.batch_size)), [(224, 224)] * args.batch_size, seed=0, size=224,
                              mix_type="cutmix")
    rec.logits = torch.randn(args.batch_size, args.classes).half()
    writer.write(rec)
    writer.close()
    from lpld.data import normalization
    mean, std = normalization("imagenet")
    ds = SoftLabelBatches(images, label_dir, 224, mean, std)
    now = item_bytes(tuple(ds.load_request(BatchRequest(0))))
    stored = ds.store.read(0)
    before_images = replay_batch(lambda i: load_rgb(images.samples[i][0]), stored, 224, mean, std)
    before = item_bytes((before_images, stored.logits.float(), ds.targets[stored.image_indices],
                         torch.tensor(0), stored.image_indices.clone()))
    records_only = SoftLabelBatches(images, label_dir, 224, mean, std, views_on_device=True)
    device = item_bytes(tuple(records_only.load_request(BatchRequest(0))))
    print(f"shared memory per loader item (batch {args.batch_size}, 224 px, {args.classes} classes): now "
          f"{now / MB:.2f} MB (uint8 views + fp16 logits), before {before / MB:.2f} MB (float32 images + float32 "
          f"logits): {now / before * 100:.1f}%; --input-path device (records only): {device / MB:.3f} MB "
          f"({device / before * 100:.2f}%)")
    for workers in (8, 16):
        print(f"  in flight with {workers} workers: now x prefetch 2 = {workers * 2 * now / MB:,.0f} MB, before x "
              f"prefetch 4 = {workers * 4 * before / MB:,.0f} MB, device path x prefetch 2 = "
              f"{workers * 2 * device / MB:,.1f} MB")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=50_000)
    p.add_argument("--epochs", type=int, default=300)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--classes", type=int, default=1000)
    p.add_argument("--prune", type=float, default=0.975)
    p.add_argument("--workers", type=int, default=4)
    p.add_argument("--reads", type=int, default=200, help="random batch reads per worker")
    p.add_argument("--skip-store", action="store_true", help="only the index and the shared-memory item")
    p.add_argument("--tmp", default=None, help="scratch folder (default: a temporary one)")
    args = p.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory(dir=args.tmp) as tmp:
        print(f"torch {torch.__version__}, numpy {np.__version__}; {args.images:,} images x {args.epochs} epochs, "
              f"batch {args.batch_size}, {args.classes} classes, {args.workers} workers, {args.reads} reads each")
        t0 = time.time()
        root, per_epoch = fabricate_index(os.path.join(tmp, "authors_1x"), args.images, args.epochs, args.batch_size)
        size = os.path.getsize(os.path.join(root, SAMPLER_JSON))
        print(f"authors' sampler json: {args.images * args.epochs:,} indices, {size / MB:.0f} MB "
              f"(fabricated in {time.time() - t0:.0f}s)")
        # now first: the former json lists would leave the main process's heap grown
        gc.collect()
        baseline = worker_memory(None, 1, 1, args.workers, args.reads)
        m0 = memory()
        t0 = time.time()
        store = open_label_store(root, index_dir=os.path.join(tmp, "out"))
        built = time.time() - t0
        gc.collect()
        m1 = memory()
        report("authors' json as int32 index (now)", m0, m1,
               worker_memory(store, store.num_batches, per_epoch, args.workers, args.reads), baseline)
        print(f"  index built once in {built:.1f}s: {du(os.path.join(tmp, 'out')) / MB:.0f} MB beside the outputs")
        del store
        gc.collect()
        baseline = worker_memory(None, 1, 1, args.workers, args.reads)
        m0 = memory()
        # before: the trainer parsed the json to check the store, and every worker parsed it again
        # when its dataset first opened the store
        checked = LegacyAuthorsIndex(os.path.join(root, SAMPLER_JSON), args.batch_size)
        checked.read_indices(0, per_epoch)
        m1 = memory()
        unopened = LegacyAuthorsIndex(os.path.join(root, SAMPLER_JSON), args.batch_size)
        report("authors' json as lists (before)", m0, m1, worker_memory(unopened, per_epoch, per_epoch, args.workers,
                                                                          args.reads), baseline)
        del checked, unopened
        gc.collect()
        shutil_rm(root)
        shm_section(args, tmp)
        if args.skip_store:
            return
        for fmt in ("ours", "authors"):
            path = os.path.join(tmp, f"x40_{fmt}")
            t0 = time.time()
            store = fabricate_store(path, fmt, args)
            seconds = time.time() - t0
            del store
            gc.collect()
            baseline = worker_memory(None, 1, 1, args.workers, args.reads)
            m0 = memory()
            store = open_label_store(path, index_dir=os.path.join(tmp, "out"))
            m1 = memory()
            report(f"x40 store, {fmt} format", m0, m1,
                   worker_memory(store, store.num_batches, store.batches_per_epoch, args.workers, args.reads), baseline)
            print(f"  label bytes on disk: {du(path):,} ({store.num_batches:,} batches; written in {seconds:.0f}s)")
            del store
            shutil_rm(path)


def shutil_rm(path: str) -> None:
    import shutil
    shutil.rmtree(path, ignore_errors=True)


if __name__ == "__main__":
    main()
