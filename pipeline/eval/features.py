"""Frozen features: an encoder's, or raw pixels (the baseline that could explain results away)."""

from __future__ import annotations

import copy
from typing import Callable

import numpy as np
import torch
from torch import nn

from pipeline.data.augment import to_float

Featurizer = Callable[[torch.Tensor], np.ndarray]  # uint8 [N, C, H, W] -> float32 [N, D]


BATCH = 1024  # images per forward pass (and per streamed batch of a split: EvalContext.features)


def encoder_features(encoder: nn.Module, device: torch.device, batch_size: int = BATCH) -> Featurizer:
    """Features of ``encoder`` in eval mode (BatchNorm running statistics). The caller's
    encoder is left alone (its device and train/eval mode): a copy is moved and switched."""
    encoder = copy.deepcopy(encoder).to(device).eval()

    @torch.no_grad()
    def featurize(images: torch.Tensor) -> np.ndarray:
        out = [encoder(to_float(images[i : i + batch_size].to(device))).float().cpu() for i in range(0, len(images), batch_size)]
        return torch.cat(out).numpy()

    return featurize


def pixel_features(images: torch.Tensor) -> np.ndarray:
    """Raw pixels in [0, 1], flattened: ``[N, C*H*W]``."""
    return to_float(images).flatten(1).numpy()
