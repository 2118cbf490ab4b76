"""The raw-pixel baseline: the features-only baseline image encoders must beat."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from pipeline.modalities.image.views import to_float

# The raw-pixel baseline's size: images of more than PIXEL_BUDGET values are first resized to
# PIXEL_SIDE x PIXEL_SIDE (antialiased), so ImageNet's [1.28M, 3x224x224] (771 GB as float32)
# becomes [1.28M, 3x32x32] (the "tiny images" baseline); Fashion-MNIST's 1x28x28 stays as it is.
PIXEL_SIDE = 32
PIXEL_BUDGET = 3 * PIXEL_SIDE * PIXEL_SIDE


def pixel_dim(channels: int, size: int) -> int:
    """The raw-pixel feature dimension of ``channels x size x size`` images."""
    return channels * size * size if channels * size * size <= PIXEL_BUDGET else channels * PIXEL_SIDE * PIXEL_SIDE


def pixel_features(images: torch.Tensor) -> np.ndarray:
    """Raw pixels in [0, 1], flattened: ``[N, C*H*W]``, or ``[N, C*32*32]`` above the budget."""
    if images.dtype != torch.uint8:
        raise ValueError(f"raw pixels need uint8 images [N, C, H, W], got {images.dtype} (text: use the tfidf baseline)")
    x = to_float(images)
    if x[0].numel() > PIXEL_BUDGET:
        x = F.interpolate(x, size=(PIXEL_SIDE, PIXEL_SIDE), mode="bilinear", antialias=True, align_corners=False)
    return x.flatten(1).numpy()


pixel_features.cache_id = f"raw_pixels:{PIXEL_SIDE}:{PIXEL_BUDGET}"  # what the feature cache keys its entries by
