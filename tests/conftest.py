"""Shared fixtures: tiny slices of real Fashion-MNIST, written as real shards."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from threadpoolctl import threadpool_limits

from pipeline.config import DataParams, parse_params
from pipeline.modalities.image.codec import write_image_shards
from pipeline.modalities.image.datasets.fashion_mnist import fashion_mnist
from pipeline.modalities.image.sources import ImageSet
from pipeline.shards.splits import make_splits

REPO = Path(__file__).resolve().parents[1]
FMNIST_ROOT = "/usr/share/datasets/fashion-mnist"

torch.set_num_threads(2)


@pytest.fixture(scope="session")
def fmnist() -> tuple[ImageSet, ImageSet]:
    if not Path(FMNIST_ROOT).is_dir():
        pytest.fail(f"{FMNIST_ROOT} missing: run 'make setup' (apt-get install dataset-fashion-mnist)")
    return fashion_mnist(FMNIST_ROOT, 28, 1, download=False)


@pytest.fixture(scope="session")
def fmnist_small(fmnist) -> tuple[ImageSet, ImageSet]:
    """600 train and 300 test images of real Fashion-MNIST."""
    train, test = fmnist
    pick = lambda s, n: ImageSet(s.images[:n], s.labels[:n], s.classes)  # noqa: E731
    return pick(train, 600), pick(test, 300)


@pytest.fixture(scope="session")
def tiny_shards(fmnist_small, tmp_path_factory) -> Path:
    """Shards of 400 pretrain/train, 200 val, 300 test real images, 150 per shard."""
    train, test = fmnist_small
    splits = make_splits(train, test, DataParams(val_size=200, shard_size=150, pretrain_size=None, train_size=None), seed=0)
    out = tmp_path_factory.mktemp("shards")
    write_image_shards(splits, out, 150, source={"test": True})
    return out


@pytest.fixture(scope="session")
def default_params_dict() -> dict:
    return yaml.safe_load((REPO / "params.yaml").read_text())


@pytest.fixture
def params(default_params_dict):
    return parse_params(default_params_dict)


def random_images(n: int, channels: int = 1, size: int = 28, seed: int = 0) -> torch.Tensor:
    return torch.from_numpy(np.random.default_rng(seed).integers(0, 256, (n, channels, size, size), dtype=np.uint8))


@pytest.fixture(scope="module")
def one_thread():
    """Tiny problems run fastest on one BLAS/torch thread (no oversubscription on shared CPUs)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with threadpool_limits(limits=1):
        yield
    torch.set_num_threads(threads)
