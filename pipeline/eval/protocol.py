"""The evaluation-protocol interface: what a protocol runs on, and what it returns.

A protocol (``pipeline/eval/protocols/<name>.py``) measures one encoder, or a features-only
baseline (raw pixels, TF-IDF), by one standard recipe (linear probe, kNN, few-shot, ...). It
gets an ``EvalContext``: the labelled splits, streamed from the shards batch by batch (uint8
images ``[B, C, H, W]``, or packed int64 text ``[B, 2, L]``) and as training sets, their frozen
features (computed once per split and shared by everything in the stage), the encoder when
there is one, and the params. It returns its full results
(the details file); ``headline`` picks the few numbers a reviewer compares (the DVC metrics
file); ``summary`` gives its columns of the report's method-by-metric table, ``verdict`` its
number in the report's verdicts, ``section`` its own part of the report and ``figures`` that
part's figures. Every method and every baseline goes through the same code. A protocol's
file holds all of it, its ``Params`` and its ``check`` too: adding one touches that file and
``params.yaml`` only.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Iterator

import numpy as np
import torch
from tqdm import tqdm

from pipeline.config import Params
from pipeline.data.labelled import LabelledSet, in_memory, streamed
from pipeline.data.loader import loader_workers
from pipeline.shards.read import first_samples, load_split, split_batches
from pipeline.eval.baselines import feature_baselines
from pipeline.eval.feature_cache import cache_key, cached_features, encoder_id, feature_dtype
from pipeline.eval.features import BATCH, Featurizer, encoder_features
from pipeline.eval.predictions import record
from pipeline.modalities.base import Modality, modality_of, modality_of_source
from pipeline.models.encoder import Encoder
from pipeline.registry import PROTOCOLS

@dataclass
class EvalContext:
    """One encoder, or a features-only baseline (``encoder`` None, ``featurizer`` its features:
    ``baselines.baseline_featurizer``), and the labelled splits it is measured on.

    ``pretrained`` is False for the random-init baseline: protocols that train the encoder
    then train it at the full learning rate (supervised from scratch)."""

    name: str
    encoder: Encoder | None
    pretrained: bool
    shards: str
    manifest: dict
    params: Params
    device: torch.device
    featurizer: Featurizer | None = field(default=None, repr=False)  # None: the encoder's features
    feature_cache: str | None = None  # a folder: split features kept there as memmaps (feature_cache.py); None: in memory
    _splits: dict = field(default_factory=dict, repr=False)
    _features: dict = field(default_factory=dict, repr=False)
    predictions: dict = field(default_factory=dict, repr=False)  # test predictions per headline key (predictions.record)

    @property
    def seed(self) -> int:
        return self.params.seed

    @property
    def num_classes(self) -> int:
        return len(self.manifest["classes"])

    @property
    def modality(self) -> Modality:
        """What the shards hold (``pipeline/modalities/``): images, text."""
        return modality_of(self.manifest)

    def split(self, name: str) -> tuple[torch.Tensor, torch.Tensor]:
        """``(x, labels int64 [N])`` of a whole labelled split, read once and held: x uint8 images
        ``[N, C, H, W]`` or packed int64 text ``[N, 2, L]``. For text only (short entries that
        train in batches of similar lengths over the whole epoch); images stream (``batches``,
        ``training_set``, ``first``)."""
        if name not in self._splits:
            self._splits[name] = load_split(self.shards, name)
        return self._splits[name]

    def batches(self, name: str) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """A labelled split in shard order, ``BATCH`` samples at a time (the last batch smaller):
        what predictions and features are computed from without holding the split."""
        return split_batches(self.shards, name, BATCH)

    def first(self, name: str, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The first ``n`` samples of a split in shard order and their labels, decoding only those."""
        return first_samples(self.shards, name, n)

    def training_set(self, splits: tuple[str, ...], shuffle_buffer: int, window_batches: int = 1,
                     keep: dict[str, np.ndarray] | None = None) -> LabelledSet:
        """The labelled samples of ``splits`` (or only the ``keep`` indices of each, in shard
        order) as a classifier trains on them: images streamed from the shards every epoch
        through a ``shuffle_buffer`` (never a split in memory, whatever its size; decoded by the
        loader workers a GPU host gets); text from memory, in batches of similar lengths sorted
        in windows of ``window_batches`` batches over the whole epoch."""
        if self.modality.train_in_memory:
            parts = [self.split(s) if keep is None else tuple(t[torch.as_tensor(keep[s])] for t in self.split(s)) for s in splits]
            x = torch.cat([x for x, _ in parts])
            return in_memory(x, torch.cat([y for _, y in parts]), window_batches, self.modality.sample_lengths(x))
        return streamed(self.shards, splits, shuffle_buffer, loader_workers(None, self.device), self.device, keep)

    def featurize(self, x: torch.Tensor) -> np.ndarray:
        """Frozen features ``[N, D]`` float32 of samples ``x`` (images or packed text)."""
        if self.featurizer is None:
            if self.encoder is None:
                raise ValueError(f"EvalContext {self.name!r} has neither an encoder nor a featurizer "
                                 "(a features-only baseline passes baselines.baseline_featurizer)")
            # bf16 autocast on CUDA; fp32 on the CPU, where the default's features stay what they were
            self.featurizer = encoder_features(self.encoder, self.device, autocast=self.device.type == "cuda")
        return self.featurizer(x)

    def featurizer_id(self) -> str | None:
        """What the feature cache keys this context's features by: the encoder's weights, or the
        featurizer's ``cache_id`` (None: not cacheable, e.g. TF-IDF fitted in the stage)."""
        if self.featurizer is None and self.encoder is not None:
            return f"encoder:{encoder_id(self.encoder)}"
        return getattr(self.featurizer, "cache_id", None)

    def features(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """``(features [N, D], labels [N])`` of a labelled split, computed once per stage,
        batch by batch as the shards stream in shard order: only the features are held,
        never the split's samples (unless a protocol asked for them: ``split``). With a
        ``feature_cache`` folder, computed once per encoder and split across stages and read
        as a memory-mapped array (float16 from CUDA, float32 from the CPU)."""
        if name not in self._features:
            fid = self.featurizer_id() if self.feature_cache is not None and name not in self._splits else None
            if fid is not None:
                dtype = feature_dtype(self.device)
                key = cache_key(fid, self.manifest, name, dtype)
                count = int(self.manifest["splits"][name]["count"])
                self._features[name] = cached_features(self.feature_cache, key, lambda: self.batches(name), self.featurize,
                                                       count, dtype)
            elif name in self._splits:
                images, labels = self._splits[name]
                self._features[name] = (self.featurize(images), labels.numpy())
            else:
                count = int(self.manifest["splits"][name]["count"])  # a bar on a terminal only (tqdm: disable=None)
                batches = tqdm(self.batches(name), total=-(-count // BATCH), desc=f"features {self.name} {name}",
                               unit="batch", leave=False, disable=None)
                feats, labels = zip(*((self.featurize(x), y.numpy()) for x, y in batches))
                self._features[name] = (np.concatenate(feats), np.concatenate(labels))
        return self._features[name]

    def record_predictions(self, metric: str, predicted, labels) -> None:
        """Keep headline ``metric``'s predicted classes ``[N]`` on the test split (shard order)
        with its labels ``[N]``: the evaluate stage writes them for the review's significance test."""
        record(self.predictions, metric, predicted, labels)

    def trainable_encoder(self) -> Encoder:
        """A fresh copy of the encoder to fine-tune (the context's own stays unchanged)."""
        return copy.deepcopy(self.encoder).train()


def register(cls: type) -> type:
    """Class decorator: register an instance of protocol ``cls`` (stateless) under ``cls.name``."""
    PROTOCOLS.register(cls())
    return cls


class Protocol:
    """Base class of evaluation protocols; subclasses register with ``@register``."""

    name: ClassVar[str]  # its params section, stage and metrics folder: metrics/<name>/<method>.json
    # the pydantic model of its params section (everything it reads, nothing else), a ``Strict``
    # subclass; validated by pipeline.config, read as ``params.protocol_params[name]``
    Params: ClassVar[type]
    order: ClassVar[int]  # position in the report
    needs_encoder: ClassVar[bool] = False  # trains or augments through the encoder: not applicable to features-only baselines

    def not_applicable(self, ctx: "EvalContext") -> str | None:
        """Why this protocol cannot measure ``ctx`` (its details say so), or ``None``."""
        if self.needs_encoder and ctx.encoder is None:
            what = feature_baselines()[ctx.name].noun if ctx.name in feature_baselines() else ctx.name
            return f"{self.name} trains or augments through an encoder; {what} have none"
        return None

    def check(self, params: Params, manifest: dict) -> None:
        """Refuse params that do not fit the shards (``UserError``), before any work (the classes
        every protocol needs are checked before it: ``pipeline.eval.checks.check_classes``)."""

    def run(self, ctx: EvalContext) -> dict[str, Any]:
        """Full results (the details file)."""
        raise NotImplementedError

    def headline(self, result: dict[str, Any]) -> dict[str, float]:
        """The few numbers a reviewer compares (the DVC metrics file): flat, numeric."""
        raise NotImplementedError

    def summary(self, result: dict[str, Any]) -> dict[str, float]:
        """Columns of the report's method-by-metric table (fractions), ``{}`` for none."""
        return {}

    def section(self, results: dict[str, dict[str, dict]], baseline_of: dict[str, str], params: Params) -> list[str]:
        """Markdown lines of its own report section (``[]`` for none). ``results`` maps every
        encoder label (methods, then baselines) to ``{protocol name: full result}``;
        ``baseline_of`` maps each method's label to its random-init baseline's label."""
        return []

    def verdict(self, result: dict[str, Any]) -> tuple[str, float] | None:
        """``(label, accuracy)`` that the report's verdicts compare with the baselines' (e.g.
        ``("linear top-1", 0.81)``), or ``None``: not in the verdicts. The first protocol in report
        order that gives one is each verdict's claim; later ones are compared with the random init."""
        return None

    def figures(self, results: dict[str, dict[str, dict]], baseline_of: dict[str, str], params: Params,
                manifest: dict, out_dir: Path) -> None:
        """Draw the figures its ``section`` links (``figures/<file>.png``) into ``out_dir``
        (``results`` and ``baseline_of`` as for ``section``); none by default."""

    def summary_line(self, headline: dict[str, float]) -> str:
        """One line for the terminal at the end of the stage."""
        return ", ".join(f"{k} {_fmt(v)}" for k, v in headline.items())


def sample_noun(params: Params, plural: bool = True) -> str:
    """What the report calls the samples of ``params.data.source``: "images", "entries" (text)
    (``plural=False``: "image", "entry")."""
    modality = modality_of_source(params.data.source)
    return modality.nouns if plural else modality.noun


def _fmt(v: float) -> str:
    return f"{100 * v:.1f}%" if isinstance(v, float) and 0 <= v <= 1 else f"{v:.4g}" if isinstance(v, float) else str(v)
