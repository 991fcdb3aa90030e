"""Helpers shared by the validate tests: a small soft-label store made directly with the label
store writer and the augmentation API (what the relabel stage writes, without its CLI)."""
from __future__ import annotations

import os

import pytest
import torch

from lpld.augment import replay_batch, sample_batch_params
from lpld.data import ImageFolder, load_rgb, normalization
from lpld.labels import LabelStoreWriter, image_list_fingerprint, open_label_store, plan_batches


@pytest.fixture(autouse=True)
def one_thread():
    """One intra-op thread: on a shared, loaded CPU this avoids OpenMP oversubscription, which makes
    small convolutions several times slower. Import it into a test module to apply it there."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def make_label_store(train_dir: str, out: str, teacher: torch.nn.Module | None, *, num_classes: int,
                     batch_size: int, epochs: int, prune_ratio: float = 0.0, mix_type: str = "cutmix",
                     size: int = 16, seed: int = 0, dataset: str = "demo",
                     epoch_orders: dict[int, list[int]] | None = None):
    """Generate soft labels for the images in ``train_dir`` like the relabel stage does: per epoch a
    seeded random image order (or ``epoch_orders[epoch]``), per batch recorded crop/flip/mix, the
    teacher's logits on the replayed batch (random logits when ``teacher`` is None)."""
    images = ImageFolder(train_dir)
    n = len(images)
    bpe, planned, drop_last = plan_batches(n, batch_size, epochs, prune_ratio)
    mean, std = normalization(dataset)
    rel = [os.path.relpath(p, train_dir) for p, _ in images.samples]
    manifest = dict(dataset=dataset, teacher="test", seed=seed, batch_size=batch_size, epochs=epochs,
                    batches_per_epoch=bpe, planned_batches=planned, prune_ratio=prune_ratio,
                    mix_type=mix_type, num_classes=num_classes, num_images=n, image_size=size,
                    cutout=False, drop_last=drop_last, logits_dtype="float16", min_scale_crops=0.08,
                    max_scale_crops=1.0, mixup_alpha=0.8, cutmix_alpha=1.0, normalize=True,
                    image_list_sha1=image_list_fingerprint(rel), amp=False)
    cache = {}

    def load(i):
        if i not in cache:
            cache[i] = load_rgb(images.samples[i][0])
        return cache[i]

    gen = torch.Generator().manual_seed(seed)
    batch_id = 0
    if teacher is not None:
        teacher.eval()
    with LabelStoreWriter(out, manifest, resume=False) as writer:
        for epoch in range(epochs):
            order = (epoch_orders or {}).get(epoch) or torch.randperm(n, generator=gen).tolist()
            for k in range(bpe):
                idx = order[k * batch_size:(k + 1) * batch_size]
                rec = sample_batch_params(batch_id, idx, [load(i).size for i in idx], seed=seed, size=size,
                                          mix_type=mix_type)
                if teacher is None:
                    rec.logits = torch.randn(len(idx), num_classes, generator=gen).half()
                else:
                    with torch.no_grad():
                        rec.logits = teacher(replay_batch(load, rec, size, mean, std)).half()
                writer.write(rec)
                batch_id += 1
                if batch_id == planned:
                    return open_label_store(out)
    return open_label_store(out)


def test_helper_store_roundtrip(demo_root, tmp_path):
    store = make_label_store(os.path.join(demo_root, "train"), str(tmp_path / "labels"), None,
                             num_classes=4, batch_size=8, epochs=2, mix_type="cutmix")
    assert store.num_batches == 2 * store.batches_per_epoch == 12
    rec = store.read(7)
    assert rec.batch_id == 7 and rec.logits.shape == (8, 4) and rec.mix_bbox is not None
