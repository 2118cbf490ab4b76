"""The modality interface: everything that differs between kinds of samples (images, text).

A modality is a folder ``pipeline/modalities/<name>/`` whose ``__init__.py`` registers one
``Modality`` instance in ``MODALITIES`` (``pipeline.registry``), and the modules beside it
(sources, codec, views, encoder, features-only baseline, transfer sets). Code that must
behave differently per modality asks the modality (``modality_of(manifest)``,
``modality_of_encoder(encoder)``, ``modality_of_source(params.data.source)``) instead of
testing a manifest key, a data source or a tensor dtype.

A batch, as the shard readers return it, is the modality's own tensor (images: uint8
``[N, C, H, W]``; text: packed int64 ``[N, 2, L]``); encoders map it to features ``[N, D]``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, ClassVar, NamedTuple

import numpy as np
import torch
from torch import nn

from pipeline.registry import MODALITIES, SOURCES

Featurizer = Callable[[torch.Tensor], np.ndarray]  # a batch -> features float32 [N, D]


class FeatureBaseline(NamedTuple):
    """A modality's features-only baseline (raw pixels, TF-IDF), as the report names it."""

    name: str  # in params.yaml ``baselines:``
    label: str  # its row in the report
    short: str  # in the report's verdicts: "beats raw pixels 83.9%"
    noun: str  # in a not-applicable note: "... through an encoder; raw pixels have none"


class Modality:
    """Base class; one instance per modality, registered in ``MODALITIES`` under ``name``."""

    name: ClassVar[str]  # the manifest's "modality" (images write none: "image" is the default)
    noun: ClassVar[str]  # one sample: "image", "entry"
    nouns: ClassVar[str]  # "images", "entries"
    content: ClassVar[str]  # what shards of it hold, in messages: "images", "text"
    encoder_archs: ClassVar[tuple[str, ...]]  # encoder.arch values that encode it
    arch_hint: ClassVar[str]  # those, as an error message suggests them: "'resnet' or 'vit'"
    baseline: ClassVar[FeatureBaseline]  # its features-only baseline
    random_crops: ClassVar[bool] = False  # its samples have random-resized-crop views (the SGD linear probe's)
    train_in_memory: ClassVar[bool] = False  # labelled sets train from memory (short samples) rather than streamed
    Params: ClassVar[type | None] = None  # the pydantic model of its own params section (named as the modality), if any

    # --- shards -------------------------------------------------------------------------------
    def write_shards(self, params, train, test, out: str) -> dict:
        """The source's labelled ``train`` and ``test`` samples (what its ``load`` gave) -> the
        four splits' shards and manifest in ``out``, which appears whole or not at all; returns
        the manifest."""
        raise NotImplementedError

    def shard_summary(self, manifest: dict, out: str) -> str:
        """The shard stage's last line."""
        counts = ", ".join(f"{s} {v['count']}" for s, v in manifest["splits"].items())
        return f"shards: {counts} {self.nouns} in {out}"

    # --- encoders -----------------------------------------------------------------------------
    def build_encoder(self, params, manifest: dict) -> nn.Module:
        """A fresh encoder of section ``params`` (``EncoderParams``) for the shards of ``manifest``."""
        raise NotImplementedError

    payload_keys: ClassVar[tuple[str, ...]]  # the keys an encoder file of this modality must hold

    def encoder_payload(self, encoder: nn.Module) -> dict:
        """What ``save_encoder`` writes: architecture, input statistics, weights, nothing volatile."""
        raise NotImplementedError

    def encoder_from_payload(self, blob: dict) -> nn.Module:
        """The (untrained) encoder ``blob`` describes; its weights are loaded by the caller."""
        raise NotImplementedError

    def check_fits(self, blob: dict, manifest: dict, path: Path, shards: str | Path, fix: str) -> None:
        """Refuse (``UserError``) an encoder file of this modality that cannot encode the shards of ``manifest``."""

    def encoder_input(self, x: torch.Tensor) -> torch.Tensor:
        """A batch as the readers return it -> what the encoder takes."""
        return x

    def featurize(self, encoder: nn.Module, x: torch.Tensor, device: torch.device, batch_size: int) -> torch.Tensor:
        """Features float ``[N, D]`` (CPU) of the batch ``x`` through ``encoder`` (in eval mode, on ``device``)."""
        return torch.cat([encoder(self.encoder_input(x[i : i + batch_size].to(device))).float().cpu()
                          for i in range(0, len(x), batch_size)])

    # --- evaluation ---------------------------------------------------------------------------
    def baseline_featurizer(self, shards: str, params) -> Featurizer:
        """The features-only baseline's featurizer for ``shards``."""
        raise NotImplementedError

    def baseline_dim(self, manifest: dict, params) -> int:
        """The width of the features-only baseline's features (at most), known before featurizing."""
        raise NotImplementedError

    def views(self, params, augment, seed: int, device: torch.device) -> Callable[..., torch.Tensor]:
        """The diagnostics' two-view maker: ``views(x, view=i)`` -> a random view of the batch ``x``
        (``augment``: the diagnostics' ``AugmentParams``, for modalities that augment as images do)."""
        raise NotImplementedError

    def views_note(self, params) -> str | None:
        """How the diagnostics' views are made, for its details (None: the augment section says it)."""
        return None

    def describe_data(self, source: str, manifest: dict) -> str:
        """What the encoders saw, for the report's first line: e.g. "`fashion-mnist` at 28x28x1"."""
        raise NotImplementedError

    def sample_lengths(self, x: torch.Tensor) -> torch.Tensor | None:
        """Per-sample lengths ``[N]`` that batches should be grouped by (text), or None."""
        return None



class Source(NamedTuple):
    """A data source (``data.source``) and the modality of its samples. ``load(params)`` gives
    the source's labelled ``(train, test)`` samples in the form its modality's ``write_shards``
    takes (images: ``SampleRefs``; text: ``TextSet``)."""

    name: str
    modality: str
    load: Callable


class TransferSet(NamedTuple):
    """A labelled dataset other than the pretraining one (``transfer.datasets``) and its modality.
    ``load(transfer_params, params, shards, manifest, seed)`` -> ``{"train", "val", "test"}``, each
    ``(samples as the modality's batch tensor, labels int64 [N])``, split with ``seed``, in the
    form the shards' encoders take (image size and channels, tokenizer and length)."""

    name: str
    modality: str
    load: Callable


def register_source(name: str, modality: str) -> Callable:
    """Decorator: register the function ``load(params)`` as data source ``name``."""
    def wrap(fn: Callable) -> Callable:
        SOURCES.register(Source(name, modality, fn), name)
        return fn
    return wrap


def modality_named(name: str) -> Modality:
    return MODALITIES.get(name)


def modality_of(manifest: dict) -> Modality:
    """The modality of a shard folder's ``manifest`` (image manifests carry no "modality" key)."""
    return MODALITIES.get(manifest.get("modality", "image"))


def modality_of_blob(blob: dict) -> Modality:
    """The modality of a saved encoder (image encoders carry no "modality" key, as before text existed)."""
    return MODALITIES.get(blob.get("modality", "image"))


def modality_of_encoder(encoder: nn.Module) -> Modality:
    return MODALITIES.get(getattr(encoder, "modality", "image"))


def modality_of_source(source: str) -> Modality:
    """The modality of data source ``source`` (``data.source``)."""
    return MODALITIES.get(SOURCES.get(source).modality)
