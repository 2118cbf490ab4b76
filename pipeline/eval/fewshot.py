"""N-way K-shot episodes on frozen features with a nearest-prototype classifier."""

from __future__ import annotations

import numpy as np


def prototype_episode_accuracy(
    features: np.ndarray, labels: np.ndarray, ways: int, shots: int, queries: int, rng: np.random.Generator
) -> float:
    """One episode: draw ``ways`` classes, ``shots`` support and ``queries`` query images
    per class; classify queries by cosine similarity to the class means of the
    L2-normalised support features. features ``[N, D]``."""
    classes = rng.choice(np.unique(labels), size=ways, replace=False)
    support, query, query_y = [], [], []
    for j, c in enumerate(classes):
        idx = rng.choice(np.flatnonzero(labels == c), size=shots + queries, replace=False)
        support.append(features[idx[:shots]])
        query.append(features[idx[shots:]])
        query_y += [j] * queries
    norm = lambda x: x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)  # noqa: E731
    prototypes = norm(np.stack([norm(s).mean(0) for s in support]))  # [ways, D]
    pred = (norm(np.concatenate(query)) @ prototypes.T).argmax(1)
    return float((pred == np.asarray(query_y)).mean())


def few_shot(features: np.ndarray, labels: np.ndarray, ways: int, shots: list[int], queries: int, episodes: int, seed: int) -> dict:
    """Mean accuracy and 95% confidence interval (1.96 * std / sqrt(episodes)) per K."""
    n_classes = len(np.unique(labels))
    ways = min(ways, n_classes)
    smallest = np.bincount(labels).min()
    out = {}
    for k in shots:
        if k + queries > smallest:
            raise ValueError(f"{k}-shot with {queries} queries needs {k + queries} images per class; the smallest class has {smallest}")
        rng = np.random.default_rng([seed, k])  # episodes of each K are fixed by the seed
        accs = np.array([prototype_episode_accuracy(features, labels, ways, k, queries, rng) for _ in range(episodes)])
        out[f"{ways}way_{k}shot"] = {"mean": float(accs.mean()), "ci95": float(1.96 * accs.std(ddof=1) / np.sqrt(episodes)) if episodes > 1 else 0.0}
    return out
