"""Class-balanced label subsets for the label-efficiency protocol (SimCLR/BYOL's 1% / 10%
tables; ``pipeline/eval/protocols/label_efficiency.py``)."""

from __future__ import annotations

import math

import numpy as np
import torch


def per_class_count(fraction: float, count: int) -> int:
    """``round(fraction * count)`` (halves rounded up), at least 1, at most ``count``."""
    return int(min(count, max(1, math.floor(fraction * count + 0.5))))


def balanced_subset(labels: np.ndarray | torch.Tensor, fraction: float, seed: int) -> np.ndarray:
    """Indices (sorted, int64) of a class-balanced subset of ``labels`` ``[N]``: each class
    present contributes ``per_class_count(fraction, its count)`` images.

    Each class's images are ranked by a permutation seeded with ``(seed, class)``, and the
    subset takes a prefix of that ranking: fixed by the seed, independent of the other
    classes, and nested (the 1% subset lies inside the 10% one for the same seed)."""
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    y = np.asarray(labels).astype(np.int64)
    out = []
    for c in np.unique(y):
        idx = np.flatnonzero(y == c)
        order = np.random.default_rng([seed, int(c)]).permutation(len(idx))
        out.append(idx[order[: per_class_count(fraction, len(idx))]])
    return np.sort(np.concatenate(out)) if out else np.zeros(0, dtype=np.int64)
