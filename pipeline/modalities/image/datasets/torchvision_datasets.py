"""Data source ``torchvision``: a ``torchvision.datasets`` class named by ``data.torchvision_name``
(e.g. CIFAR10) under ``data.root``, downloaded with ``data.download`` (needs a network)."""

from __future__ import annotations

import numpy as np
from PIL import Image

from pipeline.errors import UserError
from pipeline.modalities.base import register_source
from pipeline.modalities.image.sources import ImageSet, SampleRefs, materialize


class TorchvisionReader:
    """Images of a torchvision dataset, opened (``download=False``) once per process."""

    def __init__(self, name: str, root: str, kwargs: dict, dataset: object = None) -> None:
        self.name, self.root, self.kwargs = name, root, kwargs
        self._ds = dataset

    def __getstate__(self) -> dict:
        return {"name": self.name, "root": self.root, "kwargs": self.kwargs, "_ds": None}

    def load(self, i: int) -> Image.Image:
        if self._ds is None:
            import torchvision.datasets as tvd

            self._ds = getattr(tvd, self.name)(self.root, download=False, **self.kwargs)
        return self._ds[i][0]


_SPLIT_ARG = {"STL10": ("train", "test"), "SVHN": ("train", "test"), "Food101": ("train", "test")}


def _dataset_labels(ds) -> np.ndarray:
    """A torchvision dataset's labels without decoding its images where it keeps them."""
    for attr in ("targets", "labels", "_labels"):
        labels = getattr(ds, attr, None)
        if labels is not None and len(labels) == len(ds):
            return np.asarray(labels, dtype=np.int64).reshape(len(ds))
    return np.array([int(ds[i][1]) for i in range(len(ds))], dtype=np.int64)


def torchvision_refs(name: str | None, root: str, download: bool) -> tuple[SampleRefs, SampleRefs]:
    """A torchvision dataset's train and test sets, by index."""
    import torchvision.datasets as tvd

    if not name:
        raise UserError("data.source is torchvision but data.torchvision_name is empty; set it, e.g. CIFAR10")
    cls = getattr(tvd, name, None)
    if cls is None:
        raise UserError(f"torchvision has no dataset named {name!r}; use a class name from torchvision.datasets, e.g. CIFAR10")
    sets = []
    for train in (True, False):
        kwargs = {"split": _SPLIT_ARG[name][0 if train else 1]} if name in _SPLIT_ARG else {"train": train}
        try:
            ds = cls(root, download=download, **kwargs)
        except RuntimeError as err:
            raise UserError(f"torchvision {name} under {root}: {err} (offline? set download: true on a networked host)") from None
        labels = _dataset_labels(ds)
        classes = list(getattr(ds, "classes", [str(c) for c in sorted(set(labels.tolist()))]))
        sets.append(SampleRefs(TorchvisionReader(name, root, kwargs, ds), np.arange(len(labels)), labels, classes))
    return sets[0], sets[1]


def torchvision_dataset(name: str | None, root: str, size: int, channels: int, download: bool) -> tuple[ImageSet, ImageSet]:
    """``torchvision_refs`` loaded into arrays."""
    train, test = torchvision_refs(name, root, download)
    return materialize(train, size, channels), materialize(test, size, channels)


@register_source("torchvision", "image")
def load(params) -> tuple[SampleRefs, SampleRefs]:
    """``(train, test)`` references."""
    d = params.data
    return torchvision_refs(d.torchvision_name, d.root, d.download)
