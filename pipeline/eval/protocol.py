"""The evaluation-protocol interface: what a protocol runs on, and what it returns.

A protocol (``pipeline/eval/protocols/<name>.py``) measures one encoder, or raw pixels, by
one standard recipe (linear probe, kNN, few-shot, ...). It gets an ``EvalContext``: the
labelled splits, their frozen features (computed once per split and shared by everything
in the stage), the encoder when there is one, and the params. It returns its full results
(the details file); ``headline`` picks the few numbers a reviewer compares (the DVC metrics
file); ``summary`` gives its columns of the report's method-by-metric table and ``section``
its own part of the report. Every method and every baseline goes through the same code.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import torch

from pipeline.config import Params
from pipeline.data.shards import load_split, stream_batches
from pipeline.eval.features import BATCH, Featurizer, encoder_features, pixel_features
from pipeline.models.encoder import Encoder

def seed_everything(seed: int) -> None:
    np.random.seed(seed)
    torch.manual_seed(seed)


@dataclass
class EvalContext:
    """One encoder (``None``: raw pixels) and the labelled splits it is measured on.

    ``pretrained`` is False for the random-init baseline: protocols that train the encoder
    then train it at the full learning rate (supervised from scratch)."""

    name: str
    encoder: Encoder | None
    pretrained: bool
    shards: str
    manifest: dict
    params: Params
    device: torch.device
    _splits: dict = field(default_factory=dict, repr=False)
    _features: dict = field(default_factory=dict, repr=False)
    _featurizer: Featurizer | None = field(default=None, repr=False)

    @property
    def seed(self) -> int:
        return self.params.seed

    @property
    def num_classes(self) -> int:
        return len(self.manifest["classes"])

    def split(self, name: str) -> tuple[torch.Tensor, torch.Tensor]:
        """``(images uint8 [N, C, H, W], labels int64 [N])`` of a labelled split, read once."""
        if name not in self._splits:
            self._splits[name] = load_split(self.shards, name)
        return self._splits[name]

    def featurize(self, images: torch.Tensor) -> np.ndarray:
        """Frozen features ``[N, D]`` float32 of uint8 images ``[N, C, H, W]``."""
        if self._featurizer is None:
            self._featurizer = pixel_features if self.encoder is None else encoder_features(self.encoder, self.device)
        return self._featurizer(images)

    def features(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """``(features [N, D], labels [N])`` of a labelled split, computed once per stage,
        batch by batch as the shards stream in shard order: only the features are held,
        never the split's images (unless a protocol asked for them: ``split``)."""
        if name not in self._features:
            if name in self._splits:
                images, labels = self._splits[name]
                self._features[name] = (self.featurize(images), labels.numpy())
            else:
                batches = stream_batches(self.shards, name, BATCH, 1, seed=0, rank=0, world_size=1, ordered=True,
                                         drop_last=False)
                feats, labels = zip(*((self.featurize(x), y.numpy()) for x, y in batches))
                self._features[name] = (np.concatenate(feats), np.concatenate(labels))
        return self._features[name]

    def trainable_encoder(self) -> Encoder:
        """A fresh copy of the encoder to fine-tune (the context's own stays unchanged)."""
        return copy.deepcopy(self.encoder).train()


class Protocol:
    """Base class of evaluation protocols; subclasses register with ``@register``."""

    name: ClassVar[str]  # its params section, stage and metrics folder: metrics/<name>/<method>.json
    Params: ClassVar[type]  # the pydantic model of its params section (everything it reads, nothing else)
    order: ClassVar[int]  # position in the report
    needs_encoder: ClassVar[bool] = False  # trains or augments through the encoder: not applicable to raw pixels

    def not_applicable(self, ctx: "EvalContext") -> str | None:
        """Why this protocol cannot measure ``ctx`` (its details say so), or ``None``."""
        if self.needs_encoder and ctx.encoder is None:
            return f"{self.name} trains or augments through an encoder; raw pixels have none"
        return None

    def check(self, params: Params, manifest: dict) -> None:
        """Refuse params that do not fit the shards (``UserError``), before any work."""

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

    def summary_line(self, headline: dict[str, float]) -> str:
        """One line for the terminal at the end of the stage."""
        return ", ".join(f"{k} {_fmt(v)}" for k, v in headline.items())


def _fmt(v: float) -> str:
    return f"{100 * v:.1f}%" if isinstance(v, float) and 0 <= v <= 1 else f"{v:.4g}" if isinstance(v, float) else str(v)
