"""Weighted cosine k-nearest-neighbour classifier (Wu et al. 2018; DINO's monitor)."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


@torch.no_grad()
def knn_predict(
    bank: np.ndarray, bank_labels: np.ndarray, queries: np.ndarray, k: int, temperature: float, chunk: int = 1024
) -> np.ndarray:
    """Class scores ``[Q, C]``: each of the k most cosine-similar bank items votes for its
    class with weight exp(similarity / temperature). bank ``[N, D]``, queries ``[Q, D]``.

    Raises ``ValueError`` unless ``1 <= k <= N``: capping k at the bank would label a
    result "kNN-k" that voted over fewer neighbours."""
    if not 1 <= k <= len(bank):
        raise ValueError(f"kNN needs 1 <= k <= the bank size; got k={k} for a bank of {len(bank)} items")
    bank_t = F.normalize(torch.from_numpy(bank).float(), dim=1)
    labels_t = torch.from_numpy(bank_labels).long()
    n_classes = int(labels_t.max()) + 1
    out = []
    for i in range(0, len(queries), chunk):
        q = F.normalize(torch.from_numpy(queries[i : i + chunk]).float(), dim=1)
        sim, idx = (q @ bank_t.T).topk(k, dim=1)
        weights = (sim / temperature).exp()
        scores = torch.zeros(len(q), n_classes).scatter_add_(1, labels_t[idx], weights)
        out.append(scores)
    return torch.cat(out).numpy()


def knn_accuracy(bank, bank_labels, queries, query_labels, k: int, temperature: float) -> float:
    """Top-1 accuracy (fraction) of ``knn_predict``."""
    scores = knn_predict(bank, bank_labels, queries, k, temperature)
    return float((scores.argmax(1) == query_labels).mean())
