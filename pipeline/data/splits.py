"""Carve the source's train/test sets into the pipeline's four splits.

- ``val``: a held-out slice of the source's train set (model selection, L2 sweeps).
- ``train``: labelled images for the evaluations (a prefix of the rest).
- ``pretrain``: the same pool without labels (SSL uses train images, never their labels).
- ``test``: the source's test set.
"""

from __future__ import annotations

import numpy as np

from pipeline.config import DataParams
from pipeline.data.sources import ImageSet
from pipeline.errors import UserError

SPLITS = ("pretrain", "train", "val", "test")


def make_splits(train: ImageSet, test: ImageSet, data: DataParams, seed: int) -> dict[str, ImageSet]:
    """Deterministic for a seed: one permutation of the source's train set."""
    if data.val_size >= len(train):
        raise UserError(f"data.val_size={data.val_size} leaves no training images (source has {len(train)})")
    order = np.random.default_rng(seed).permutation(len(train))
    val_idx, pool = order[: data.val_size], order[data.val_size :]

    def take(idx: np.ndarray, name: str, size: int | None, n_avail: int) -> np.ndarray:
        if size is not None and size > n_avail:
            raise UserError(f"data.{name}_size={size} exceeds the {n_avail} images available; lower it or set it to null")
        return idx[: size if size is not None else n_avail]

    pick = lambda s, i: ImageSet(s.images[i], s.labels[i], s.classes)  # noqa: E731
    test_idx = take(np.arange(len(test)), "test", data.test_size, len(test))
    return {
        "pretrain": pick(train, take(pool, "pretrain", data.pretrain_size, len(pool))),
        "train": pick(train, take(pool, "train", data.train_size, len(pool))),
        "val": pick(train, val_idx),
        "test": pick(test, test_idx),
    }
