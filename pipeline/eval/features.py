"""Frozen features of an encoder, the same for every modality (the modality forwards its own
batches: ``Modality.featurize``); the features-only baselines' featurizers are the
modalities' (``pipeline/modalities/<name>/``)."""

from __future__ import annotations

import copy

import numpy as np
import torch
from torch import nn

from pipeline.modalities.base import Featurizer, modality_of_encoder

__all__ = ["BATCH", "Featurizer", "encoder_features"]

BATCH = 1024  # samples per forward pass (and per streamed batch of a split: EvalContext.features)


def encoder_features(encoder: nn.Module, device: torch.device, batch_size: int = BATCH, autocast: bool = False) -> Featurizer:
    """Features of ``encoder`` in eval mode (BatchNorm running statistics). The caller's
    encoder is left alone (its device and train/eval mode): a copy is moved and switched.
    A batch goes through its modality's ``featurize`` (images: uint8 to [0, 1] floats, float
    views as they are; text: entries in length order). ``autocast``: the forward passes in
    bfloat16 autocast (CUDA's fast path; the features come back as float32 either way)."""
    encoder = copy.deepcopy(encoder).to(device).eval()
    modality = modality_of_encoder(encoder)

    @torch.no_grad()
    @torch.autocast(device.type, torch.bfloat16, enabled=autocast)
    def featurize(x: torch.Tensor) -> np.ndarray:
        return modality.featurize(encoder, x, device, batch_size).numpy()

    return featurize
