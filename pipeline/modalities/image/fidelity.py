"""Does the stored format throw information away? A look at a few source images before sharding.

Photos with the defaults (``data.channels: 1``, ``data.image_size: 28``) would silently become
28x28 greyscale. The shard stage samples ``SAMPLE`` images and warns (it does not refuse: a
small grey copy may be what the user wants) when they are in colour but stored grey, or when
their short side is at least ``SHRINK`` times the stored side.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

SAMPLE = 16  # images opened (evenly spaced over the set): a cheap look, not a census
SHRINK = 4  # warn when the median short side is at least this many times the stored side
_GREY_TOL = 2  # max |R-G|, |G-B| (of 255) for an RGB image to count as grey


def _as_array(img) -> np.ndarray:
    """uint8 ``[H, W]`` or ``[H, W, C]`` of a PIL image or array sample."""
    if isinstance(img, Image.Image):
        img = img.convert("RGB") if img.mode not in ("L", "RGB") else img
        return np.asarray(img)
    return np.asarray(img)


def _is_colour(arr: np.ndarray) -> bool:
    if arr.ndim == 2 or arr.shape[-1] == 1:
        return False
    rgb = arr[..., :3].astype(np.int16)
    return bool(max(np.abs(rgb[..., 0] - rgb[..., 1]).max(), np.abs(rgb[..., 1] - rgb[..., 2]).max()) > _GREY_TOL)


def information_loss(refs, image_size: int, channels: int, store_size: int | None) -> list[str]:
    """Warnings (``[]`` for none) about what storing ``refs`` (``sources.SampleRefs``) at
    ``store_size or image_size`` px square with ``channels`` channels loses, from ``SAMPLE`` images."""
    if len(refs) == 0:
        return []
    picks = np.unique(np.linspace(0, len(refs) - 1, min(SAMPLE, len(refs))).astype(int))
    arrays = [_as_array(refs.reader.load(int(refs.index[i]))) for i in picks]
    side = store_size or image_size
    warnings = []
    colour = sum(_is_colour(a) for a in arrays)
    if channels == 1 and colour:
        warnings.append(f"{colour} of {len(arrays)} sampled images are in colour but data.channels is 1: "
                        "they are stored as grey. Set data.channels: 3 (presets/photos.yaml does).")
    short = int(np.median([min(a.shape[:2]) for a in arrays]))
    if short >= SHRINK * side:
        key = "data.store_size" if store_size else "data.image_size"
        warnings.append(f"sampled images have a median short side of {short} px but are stored at {side}x{side} px "
                        f"({short // side}x smaller): most detail is lost. Raise {key} "
                        "(presets/photos.yaml: image_size 64) if that is not what you want.")
    return warnings
