"""The baselines every method is measured against, by the same protocols on the same splits
(params.yaml ``baselines:``): each modality's features-only one (``Modality.baseline``:
``raw_pixels`` for images, ``tfidf`` for text); ``random_init``, the shared encoder section's architecture at
the initialisation pretraining starts from (same seed); and ``random_init_<method>``, a
method's own encoder (e.g. MAE's ViT) at its initialisation. Fine-tuning a random init is
supervised training from scratch."""

from __future__ import annotations

import torch
from torch import nn

from pipeline.config import Params
from pipeline.errors import UserError
from pipeline.modalities.base import FeatureBaseline, Featurizer, modality_of
from pipeline.modalities.encoders import build_encoder
from pipeline.registry import MODALITIES
from pipeline.shards.manifest import read_manifest

RANDOM_INIT = "random_init"


def feature_baselines() -> dict[str, FeatureBaseline]:
    """Every modality's features-only baseline, by its params name."""
    return {m.baseline.name: m.baseline for _, m in MODALITIES.items()}


def baseline_method(name: str) -> str | None:
    """The method whose encoder section a ``random_init_<method>`` baseline uses."""
    return name.removeprefix(f"{RANDOM_INIT}_") if name.startswith(f"{RANDOM_INIT}_") else None


def baseline_encoder(params: Params, name: str, manifest: dict) -> nn.Module | None:
    """The encoder of baseline ``name`` (``None`` for a features-only baseline), built under
    ``torch.manual_seed(params.seed)`` in a forked RNG (the global one is left alone), as
    pretraining builds its encoder."""
    if name in feature_baselines():
        return None
    method = baseline_method(name)
    enc = params.encoder_for(method) if method else params.encoder
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(params.seed)
        return build_encoder(enc, manifest).eval()


def baseline_featurizer(params: Params, name: str, shards: str) -> Featurizer | None:
    """The featurizer of a features-only baseline (``None`` for an encoder baseline: its
    encoder's features), from the shards' modality: raw pixels, or TF-IDF fitted on the
    pretrain split of ``shards`` (on first use). Another modality's baseline is refused
    (``UserError``) before any work."""
    if name not in feature_baselines():
        return None
    modality = modality_of(read_manifest(shards))
    if name != modality.baseline.name:
        raise UserError(f"baseline {name!r} cannot measure {modality.name} shards ({shards}); "
                        f"use {modality.baseline.name!r} in baselines:")
    return modality.baseline_featurizer(shards, params)


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


def features_baseline(params: Params) -> str | None:
    """The listed features-only baseline the report's verdicts compare against (tfidf for text,
    raw_pixels for images), if any."""
    return next((b for b in params.baselines if b in feature_baselines()), None)


def label(name: str) -> str:
    """How the report names a baseline."""
    if name in feature_baselines():
        return feature_baselines()[name].label
    method = baseline_method(name)
    return f"random init, {method}'s encoder (baseline)" if method else "random init (baseline)"
