"""Shared fixtures: a small generated demo dataset, CPU thread limits, skip markers."""
from __future__ import annotations

import os

import pytest
import torch

torch.set_num_threads(min(2, os.cpu_count() or 1))

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY_SHARED = os.path.join(os.path.dirname(REPO), "shared", "data", "tiny-imagenet-200")


def pytest_collection_modifyitems(config, items):
    skip_cuda = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "cuda" in item.keywords and not torch.cuda.is_available():
            item.add_marker(skip_cuda)


@pytest.fixture(scope="session")
def demo_root(tmp_path_factory) -> str:
    """A small demo dataset (4 classes, 16 px) shared by the whole test session."""
    from lpld.data import make_demo_dataset
    root = str(tmp_path_factory.mktemp("demo") / "demo")
    return make_demo_dataset(root, num_classes=4, image_size=16, train_per_class=12, val_per_class=6, seed=0)
