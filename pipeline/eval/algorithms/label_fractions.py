"""Class-balanced label subsets for the label-efficiency protocol (SimCLR/BYOL's 1% / 10%
tables; ``pipeline/eval/protocols/label_efficiency.py``)."""

from __future__ import annotations

import math

import numpy as np
import torch


def rounded_count(fraction: float, count: int) -> int:
    """``round(fraction * count)``, halves rounded up: the images a class of ``count`` keeps at
    ``fraction`` before ``per_class_count``'s floor of 1 (0: the fraction is too small for it)."""
    return math.floor(fraction * count + 0.5)


def per_class_count(fraction: float, count: int) -> int:
    """``rounded_count``, at least 1, at most ``count``."""
    return int(min(count, max(1, rounded_count(fraction, count))))


def smallest_fraction(count: int) -> float:
    """The smallest fraction, rounded up to 2 significant digits, that keeps 1 of ``count``
    images (``rounded_count`` rounds halves up): about 0.5 / count."""
    exact = 0.5 / count
    digits = 1 - math.floor(math.log10(exact))
    fraction = math.ceil(exact * 10**digits) / 10**digits
    while rounded_count(fraction, count) < 1:  # float rounding of the division, just in case
        fraction += 10**-digits
    return min(fraction, 1.0)


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
