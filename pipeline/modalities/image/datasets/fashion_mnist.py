"""Data source ``fashion-mnist``: Zalando's Fashion-MNIST IDX files (Debian's dataset-fashion-mnist
under ``data.root``, or torchvision's download with ``data.download``), 60k train and 10k test
28x28 grey images of 10 classes."""

from __future__ import annotations

from pipeline.modalities.base import register_source
from pipeline.modalities.image import sources


@register_source("fashion-mnist", "image")
def load(params) -> tuple[sources.SampleRefs, sources.SampleRefs]:
    """``(train, test)`` references."""
    return sources.fashion_mnist_refs(params.data.root, params.data.download)
