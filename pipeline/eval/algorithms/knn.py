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


BANK_CHUNK = 131072  # bank rows per similarity block: [1024, 131072] float32 = 0.5 GB


@torch.no_grad()
def knn_topk(bank: np.ndarray, queries: np.ndarray, k: int, device: torch.device, chunk: int = 1024,
             bank_chunk: int = BANK_CHUNK) -> tuple[torch.Tensor, torch.Tensor]:
    """Cosine similarities and bank indices ``[Q, k]`` (most similar first) of each query's
    ``k`` nearest bank items, on ``device``. bank ``[N, D]`` (memory-mapped, float16 or float32)
    is normalised and held on the device in its own dtype, read once; queries go in chunks of
    ``chunk`` and the bank in blocks of ``bank_chunk``, whose top-k are merged, so memory is
    bounded by ``chunk x bank_chunk`` similarities whatever N."""
    dtype = torch.float16 if bank.dtype == np.float16 else torch.float32
    bank_t = torch.empty(bank.shape, dtype=dtype, device=device)
    for i in range(0, len(bank), bank_chunk):  # normalised in float32, stored back in the bank's dtype
        rows = torch.from_numpy(np.asarray(bank[i:i + bank_chunk], dtype=np.float32)).to(device)
        bank_t[i:i + bank_chunk] = F.normalize(rows, dim=1).to(dtype)
    sims, idxs = [], []
    for i in range(0, len(queries), chunk):
        q = F.normalize(torch.from_numpy(np.asarray(queries[i:i + chunk], dtype=np.float32)).to(device), dim=1).to(dtype)
        best_s, best_i = None, None
        for j in range(0, len(bank_t), bank_chunk):
            block = bank_t[j:j + bank_chunk]
            s, ix = (q @ block.T).float().topk(min(k, len(block)), dim=1)
            if best_s is None:
                best_s, best_i = s, ix + j
            else:  # merge this block's top-k with the best so far
                s, pos = torch.cat([best_s, s], 1).topk(min(k, best_s.shape[1] + s.shape[1]), dim=1)
                best_i, best_s = torch.cat([best_i, ix + j], 1).gather(1, pos), s
        sims.append(best_s)
        idxs.append(best_i)
    return torch.cat(sims), torch.cat(idxs)


def knn_predictions(bank, bank_labels: np.ndarray, queries, ks: list[int], temperature: float,
                    device: torch.device) -> dict[int, np.ndarray]:
    """Predicted class ids ``[Q]`` of the weighted kNN for every k in ``ks``, from one top-k
    search at the largest k (the nearest k of a sorted top-200 are the top-k)."""
    kmax = max(ks)
    if not 1 <= kmax <= len(bank) or min(ks) < 1:
        raise ValueError(f"kNN needs 1 <= k <= the bank size; got ks={ks} for a bank of {len(bank)} items")
    sims, idx = knn_topk(bank, queries, kmax, device)
    labels_t = torch.from_numpy(np.asarray(bank_labels)).long().to(device)
    n_classes = int(labels_t.max()) + 1
    weights, votes = (sims / temperature).exp(), labels_t[idx]
    out = {}
    for k in ks:
        scores = torch.zeros(len(idx), n_classes, device=device).scatter_add_(1, votes[:, :k], weights[:, :k])
        out[k] = scores.argmax(1).cpu().numpy()
    return out


def knn_accuracies(bank, bank_labels: np.ndarray, queries, query_labels: np.ndarray, ks: list[int], temperature: float,
                   device: torch.device) -> dict[int, float]:
    """Top-1 accuracy (fraction) of ``knn_predictions`` for every k in ``ks``."""
    predicted = knn_predictions(bank, bank_labels, queries, ks, temperature, device)
    return {k: float((p == np.asarray(query_labels)).mean()) for k, p in predicted.items()}


def knn_accuracy(bank, bank_labels, queries, query_labels, k: int, temperature: float) -> float:
    """Top-1 accuracy (fraction) of ``knn_predict``."""
    scores = knn_predict(bank, bank_labels, queries, k, temperature)
    return float((scores.argmax(1) == query_labels).mean())
