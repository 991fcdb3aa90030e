"""Shared fixtures: a small generated demo dataset, CPU thread limits, skip markers, a soft-label
store built directly with the label-store writer, and the reference class-BN statistics."""
from __future__ import annotations

import os

import pytest
import torch

from lpld.augment import replay_batch, sample_batch_params
from lpld.data import ImageFolder, load_rgb, normalization
from lpld.labels import LabelStoreWriter, image_list_fingerprint, open_label_store, plan_batches

# One intra-op thread for the whole session: the tests' models and images are tiny, and OpenMP's
# barriers between two threads cost more than they save there (many times more on a shared CPU).
# The environment carries the same limit to every stage process a test starts (a command line, a
# DDP rank, a DataLoader worker), which would otherwise start one thread per core each.
torch.set_num_threads(1)
os.environ.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY_SHARED = os.path.join(os.path.dirname(REPO), "shared", "data", "tiny-imagenet-200")


def pytest_collection_modifyitems(config, items):
    skip_cuda = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "cuda" in item.keywords and not torch.cuda.is_available():
            item.add_marker(skip_cuda)


def parse_with(schema, values: dict):
    """``schema``'s config parsed from the command line that ``values`` spell (``--key=value``, and
    ``--key`` / ``--no-key`` for booleans): the path a user's flags take."""
    from lpld.config import parse_config
    argv = [f"--{k.replace('_', '-')}={v}" for k, v in values.items() if not isinstance(v, bool)]
    argv += [f"--{'' if v else 'no-'}{k.replace('_', '-')}" for k, v in values.items() if isinstance(v, bool)]
    return parse_config(schema, argv)


def read_tree(path: str, top: str = "") -> dict[str, bytes]:
    """Every file under ``path`` (only its top-level folders starting with ``top``), by relative
    path: two trees are byte-identical when these dicts are equal."""
    out = {}
    for root, dirs, files in os.walk(path):
        if root == path:
            dirs[:] = [d for d in dirs if d.startswith(top)]
            files = [f for f in files if not top]
        for f in files:
            with open(os.path.join(root, f), "rb") as fh:
                out[os.path.relpath(os.path.join(root, f), path)] = fh.read()
    return out


def assert_learned(metrics_jsonl: str, *, chance: float, what: str) -> list[dict]:
    """A trained fixture must have trained: every validation loss finite, the last below the first,
    the last top-1 at least 1.5x ``chance`` (percent). Other CPUs run other kernels (AVX2, AVX-512,
    the plain ones), and a recipe on the edge of divergence diverges on some of them: the fixture
    then fails here, naming itself, instead of a later test failing on its labels."""
    import json
    import math
    with open(metrics_jsonl) as f:
        rows = [json.loads(line) for line in f if line.strip()]
    losses = [r["val_loss"] for r in rows if "val_loss" in r]
    top1 = [r["val_top1"] for r in rows if "val_top1" in r]
    summary = f"{what}: validation loss per epoch {losses}, top-1 {top1} (chance {chance:g}%)"
    assert losses and all(math.isfinite(v) for v in losses), f"{summary}: not finite"
    assert len(losses) < 2 or losses[-1] < losses[0], f"{summary}: the loss did not fall (diverged?)"
    assert top1[-1] >= 1.5 * chance, f"{summary}: not clearly above chance"
    return rows


@pytest.fixture(scope="session")
def demo_root(tmp_path_factory) -> str:
    """A small demo dataset (4 classes, 16 px) shared by the whole test session."""
    from lpld.data import make_demo_dataset
    root = str(tmp_path_factory.mktemp("demo") / "demo")
    return make_demo_dataset(root, num_classes=4, image_size=16, train_per_class=12, val_per_class=6, seed=0)


@pytest.fixture
def one_thread():
    """One intra-op thread: on a shared, loaded CPU this avoids OpenMP oversubscription, which makes
    small convolutions several times slower. A module applies it to all its tests with
    ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def interrupt_at_epoch(monkeypatch):
    """``interrupt_at_epoch(module, run, epoch=2)``: calls ``run()`` with ``module.train_one_epoch``
    raising KeyboardInterrupt (a Ctrl-C) when epoch ``epoch`` starts, then restores it.
    ``function="train_epoch"``: the student trainer's dispatch instead, which every kind of epoch
    (soft, hard) goes through."""
    def interrupted(module, run, epoch: int = 2, function: str = "train_one_epoch") -> None:
        real, calls = getattr(module, function), []

        def stop(*args, **kwargs):
            calls.append(1)
            if len(calls) == epoch:
                raise KeyboardInterrupt
            return real(*args, **kwargs)

        monkeypatch.setattr(module, function, stop)
        try:
            with pytest.raises(KeyboardInterrupt):
                run()
        finally:
            monkeypatch.setattr(module, function, real)
    return interrupted


def build_label_store(train_dir: str, out: str, teacher: torch.nn.Module | None, *, num_classes: int,
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


@pytest.fixture(scope="session")
def make_label_store():
    """:func:`build_label_store`: a soft-label store as the relabel stage writes it, without its CLI."""
    return build_label_store


def reference_class_update(mean, var, x, labels, momentum):
    """The authors' class-BN statistics update, one class at a time."""
    mean, var = mean.clone(), var.clone()
    for c in labels.unique().tolist():
        xc = x[labels == c]
        mu = xc.mean(dim=(0, 2, 3))
        v = xc.permute(1, 0, 2, 3).reshape(x.shape[1], -1).var(1, unbiased=False)
        mean[c] = (1 - momentum) * mean[c] + momentum * mu
        var[c] = (1 - momentum) * var[c] + momentum * v
    return mean, var


@pytest.fixture(scope="session")
def class_update_reference():
    """:func:`reference_class_update`, the per-class loop the vectorised class-BN update must equal."""
    return reference_class_update
