"""Frozen features: an encoder's, or a features-only baseline's (raw pixels; TF-IDF for text,
``pipeline.modalities.text.tfidf``): the baselines that could explain results away."""

from __future__ import annotations

import copy
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from pipeline.modalities.image.views import to_float
from pipeline.models.encoder import encoder_input, text_lengths

# samples -> float32 [N, D]: uint8 images [N, C, H, W] or packed int64 text [N, 2, L]
Featurizer = Callable[[torch.Tensor], np.ndarray]


BATCH = 1024  # samples per forward pass (and per streamed batch of a split: EvalContext.features)
TEXT_BATCH = 128  # entries per forward pass, of similar lengths (benchmarks/text_features.py)


def encoder_features(encoder: nn.Module, device: torch.device, batch_size: int = BATCH, autocast: bool = False) -> Featurizer:
    """Features of ``encoder`` in eval mode (BatchNorm running statistics). The caller's
    encoder is left alone (its device and train/eval mode): a copy is moved and switched.
    Inputs go through ``encoder_input`` (uint8 images to [0, 1] floats; float images and
    packed text as they are). ``autocast``: the forward passes in bfloat16 autocast (CUDA's
    fast path; the features come back as float32 either way)."""
    encoder = copy.deepcopy(encoder).to(device).eval()

    @torch.no_grad()
    @torch.autocast(device.type, torch.bfloat16, enabled=autocast)
    def featurize(x: torch.Tensor) -> np.ndarray:
        if x.dtype != torch.int64:  # images: uint8, or float views in [0, 1] (diagnostics)
            out = [encoder(encoder_input(x[i : i + batch_size].to(device))).float().cpu() for i in range(0, len(x), batch_size)]
            return torch.cat(out).numpy()
        # packed text [N, 2, L]: entries sorted by length, so that each forward pass is cut to its own
        # longest entry (unpack_text) and computes few padding positions; features go back in input order
        # (each entry's features do not depend on the others in its batch)
        order = text_lengths(x).argsort(stable=True)
        out = torch.empty(len(x), encoder.feature_dim)
        step = min(batch_size, TEXT_BATCH)
        for i in range(0, len(x), step):
            idx = order[i : i + step]
            out[idx] = encoder(x[idx].to(device)).float().cpu()
        return out.numpy()

    return featurize


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
