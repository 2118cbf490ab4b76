"""The pretraining monitor: weighted kNN top-1 (DINO's monitor) of the encoder's frozen
features, the split's first ``pretrain.knn_bank_size`` train samples as the bank and the first
``pretrain.knn_query_size`` val samples as the queries, every ``pretrain.knn_every`` epochs
and after the last one.

It lives in eval, not train: it runs an evaluation algorithm (``algorithms/knn.py``) on frozen
features, and train sits below eval. ``pipeline.train.pretrain.run_pretraining`` takes it as a
callback; the pretrain stage wires the two together.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from pipeline.config import PretrainParams
from pipeline.shards.read import first_samples
from pipeline.eval.algorithms.knn import knn_accuracy
from pipeline.eval.features import encoder_features


class KnnMonitor:
    """``monitor(encoder, epoch)``: ``{"knn_top1": fraction}`` on the epochs it measures, else ``{}``.

    The bank and queries are decoded once, when it is built: images uint8 ``[N, C, H, W]`` (or
    packed text ``[N, 2, L]``), labels numpy ``[N]``."""

    def __init__(self, shards: str, p: PretrainParams, temperature: float, device: torch.device):
        self.every, self.epochs, self.k, self.temperature, self.device = p.knn_every, p.epochs, p.knn_k, temperature, device
        self.bank_x, self.bank_y = _first_samples(shards, "train", p.knn_bank_size)
        self.query_x, self.query_y = _first_samples(shards, "val", p.knn_query_size)

    def __call__(self, encoder: nn.Module, epoch: int) -> dict:
        if (epoch + 1) % self.every and epoch + 1 != self.epochs:
            return {}
        featurize = encoder_features(encoder, self.device)
        k = min(self.k, len(self.bank_y))  # a bank smaller than k votes over all of it
        return {"knn_top1": knn_accuracy(featurize(self.bank_x), self.bank_y, featurize(self.query_x), self.query_y, k,
                                         self.temperature)}


def _first_samples(shards: str, split: str, n: int) -> tuple[torch.Tensor, np.ndarray]:
    """The split's first ``n`` samples, and their labels as numpy."""
    x, y = first_samples(shards, split, n)
    return x, y.numpy()
