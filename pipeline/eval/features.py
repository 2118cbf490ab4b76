"""Frozen features: an encoder's, or a features-only baseline's (raw pixels; TF-IDF for text,
``pipeline.eval.tfidf``): the baselines that could explain results away."""

from __future__ import annotations

import copy
from typing import Callable

import numpy as np
import torch
from torch import nn

from pipeline.data.augment import to_float
from pipeline.models.encoder import encoder_input, text_lengths

# samples -> float32 [N, D]: uint8 images [N, C, H, W] or packed int64 text [N, 2, L]
Featurizer = Callable[[torch.Tensor], np.ndarray]


BATCH = 1024  # samples per forward pass (and per streamed batch of a split: EvalContext.features)
TEXT_BATCH = 128  # entries per forward pass, of similar lengths (benchmarks/text_features.py)


def encoder_features(encoder: nn.Module, device: torch.device, batch_size: int = BATCH) -> Featurizer:
    """Features of ``encoder`` in eval mode (BatchNorm running statistics). The caller's
    encoder is left alone (its device and train/eval mode): a copy is moved and switched.
    Inputs go through ``encoder_input`` (uint8 images to [0, 1] floats; float images and
    packed text as they are)."""
    encoder = copy.deepcopy(encoder).to(device).eval()

    @torch.no_grad()
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


def pixel_features(images: torch.Tensor) -> np.ndarray:
    """Raw pixels in [0, 1], flattened: ``[N, C*H*W]``."""
    if images.dtype != torch.uint8:
        raise ValueError(f"raw pixels need uint8 images [N, C, H, W], got {images.dtype} (text: use the tfidf baseline)")
    return to_float(images).flatten(1).numpy()
