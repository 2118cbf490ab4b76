"""The baselines every method is measured against, by the same protocols on the same splits
(params.yaml ``baselines:``): the features-only ones, ``raw_pixels`` (images) and ``tfidf``
(text: ``pipeline.modalities.text.tfidf``); ``random_init``, the shared encoder section's architecture at
the initialisation pretraining starts from (same seed); and ``random_init_<method>``, a
method's own encoder (e.g. MAE's ViT) at its initialisation. Fine-tuning a random init is
supervised training from scratch."""

from __future__ import annotations

from typing import NamedTuple

import torch

from pipeline.config import Params
from pipeline.shards.manifest import read_manifest
from pipeline.errors import UserError
from pipeline.eval.features import Featurizer, pixel_features
from pipeline.models.encoder import Encoder, build_encoder

RAW_PIXELS = "raw_pixels"
TFIDF = "tfidf"
RANDOM_INIT = "random_init"


class FeatureBaseline(NamedTuple):
    label: str  # its row in the report
    short: str  # in the report's verdicts: "beats raw pixels 83.9%"
    noun: str  # in a not-applicable note: "... through an encoder; raw pixels have none"


FEATURE_BASELINES = {RAW_PIXELS: FeatureBaseline("raw pixels (baseline)", "raw pixels", "raw pixels"),
                     TFIDF: FeatureBaseline("TF-IDF (baseline)", "TF-IDF", "TF-IDF features")}


def baseline_method(name: str) -> str | None:
    """The method whose encoder section a ``random_init_<method>`` baseline uses."""
    return name.removeprefix(f"{RANDOM_INIT}_") if name.startswith(f"{RANDOM_INIT}_") else None


def baseline_encoder(params: Params, name: str, manifest: dict) -> Encoder | None:
    """The encoder of baseline ``name`` (``None`` for a features-only baseline), built under
    ``torch.manual_seed(params.seed)`` in a forked RNG (the global one is left alone), as
    pretraining builds its encoder."""
    if name in FEATURE_BASELINES:
        return None
    method = baseline_method(name)
    enc = params.encoder_for(method) if method else params.encoder
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(params.seed)
        return build_encoder(enc, manifest).eval()


def baseline_featurizer(params: Params, name: str, shards: str) -> Featurizer | None:
    """The featurizer of a features-only baseline (``None`` for an encoder baseline: its
    encoder's features). ``raw_pixels``: flattened pixels; ``tfidf``: TF-IDF fitted on the
    pretrain split of ``shards`` (on first use). A baseline of the other modality than the
    shards' is refused (``UserError``) before any work."""
    if name in FEATURE_BASELINES:
        text = read_manifest(shards).get("modality") == "text"
        if (name == TFIDF) != text:
            fits = "tfidf" if text else "raw_pixels"
            raise UserError(f"baseline {name!r} cannot measure {'text' if text else 'image'} shards ({shards}); "
                            f"use {fits!r} in baselines:")
    if name == RAW_PIXELS:
        return pixel_features
    if name == TFIDF:
        from pipeline.modalities.text.tfidf import tfidf_featurizer  # scikit-learn's text module: only when asked for

        return tfidf_featurizer(shards, params.text.tfidf_max_features)
    return None


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
    return next((b for b in params.baselines if b in FEATURE_BASELINES), None)


def label(name: str) -> str:
    """How the report names a baseline."""
    if name in FEATURE_BASELINES:
        return FEATURE_BASELINES[name].label
    method = baseline_method(name)
    return f"random init, {method}'s encoder (baseline)" if method else "random init (baseline)"
