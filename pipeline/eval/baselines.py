"""The baselines every method is measured against, by the same protocols on the same splits
(params.yaml ``baselines:``): ``raw_pixels``; ``random_init``, the shared encoder section's
architecture at the initialisation pretraining starts from (same seed); and
``random_init_<method>``, a method's own encoder (e.g. MAE's ViT) at its initialisation.
Fine-tuning a random init is supervised training from scratch."""

from __future__ import annotations

import torch

from pipeline.config import Params
from pipeline.models.encoder import Encoder, build_encoder

RAW_PIXELS = "raw_pixels"
RANDOM_INIT = "random_init"


def baseline_method(name: str) -> str | None:
    """The method whose encoder section a ``random_init_<method>`` baseline uses."""
    return name.removeprefix(f"{RANDOM_INIT}_") if name.startswith(f"{RANDOM_INIT}_") else None


def baseline_encoder(params: Params, name: str, manifest: dict) -> Encoder | None:
    """The encoder of baseline ``name`` (``None`` for raw pixels), built under
    ``torch.manual_seed(params.seed)`` in a forked RNG (the global one is left alone), as
    pretraining builds its encoder."""
    if name == RAW_PIXELS:
        return None
    method = baseline_method(name)
    enc = params.encoder_for(method) if method else params.encoder
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(params.seed)
        return build_encoder(enc, manifest).eval()


def matching_random_init(params: Params, method: str) -> str | None:
    """The listed random-init baseline with ``method``'s encoder architecture, if any."""
    enc = params.encoder_for(method)
    for name in params.baselines:
        if name == RANDOM_INIT and enc == params.encoder:
            return name
        other = baseline_method(name)
        if other and params.encoder_for(other) == enc:
            return name
    return None


def label(name: str) -> str:
    """How the report names a baseline."""
    if name == RAW_PIXELS:
        return "raw pixels (baseline)"
    method = baseline_method(name)
    return f"random init, {method}'s encoder (baseline)" if method else "random init (baseline)"
