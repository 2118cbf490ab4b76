"""Data source ``imagefolder``: the user's own images, ``data.root/<class>/*.jpg`` (a seeded,
stratified ``data.test_fraction`` held out as test) or ``data.root/{train,val}/<class>/``."""

from __future__ import annotations

from pipeline.modalities.base import register_source
from pipeline.modalities.image import sources


@register_source("imagefolder", "image")
def load(params) -> tuple[sources.SampleRefs, sources.SampleRefs]:
    """``(train, test)`` references; a file over ``data.max_image_pixels`` is refused from its header."""
    d = params.data
    train, test = sources.image_folder_refs(d.root, d.test_fraction, params.seed)
    sources.limit_pixels((train, test), d.max_image_pixels)
    return train, test
