"""Data source ``torchvision``: a ``torchvision.datasets`` class named by ``data.torchvision_name``
(e.g. CIFAR10) under ``data.root``, downloaded with ``data.download`` (needs a network)."""

from __future__ import annotations

from pipeline.modalities.base import register_source
from pipeline.modalities.image import sources


@register_source("torchvision", "image")
def load(params) -> tuple[sources.SampleRefs, sources.SampleRefs]:
    """``(train, test)`` references."""
    d = params.data
    return sources.torchvision_refs(d.torchvision_name, d.root, d.download)
