"""Carve a source's labelled samples into the pipeline's four splits (any modality: only labels
and counts are read; samples are anything with ``len``, ``take(idx)``, ``labels`` int64 ``[N]``
and ``classes``, as ``ImageSet``, ``SampleRefs`` and ``TextSet`` have).

- ``split_stratified``: a seeded class-stratified (train, test) split, for sources without a test split.

- ``val``: a held-out slice of the source's train set (model selection, L2 sweeps).
- ``train``: labelled images for the evaluations (a prefix of the rest).
- ``pretrain``: the same pool without labels (SSL uses train images, never their labels).
- ``test``: the source's test set, or a seeded random subset of ``data.test_size`` of it (sources
  that list their samples class by class, as fortunes and ImageFolders do, would otherwise lose
  whole classes to a prefix), kept in the source's order.
"""

from __future__ import annotations

import numpy as np

from pipeline.config import DataParams
from pipeline.errors import UserError

SPLITS = ("pretrain", "train", "val", "test")


def split_stratified(data, test_fraction: float, seed: int):
    """Split labelled samples (``ImageSet``, ``SampleRefs``, ``TextSet``) into (train, test) keeping
    class proportions; deterministic for a seed (it depends on the labels only)."""
    from sklearn.model_selection import train_test_split

    idx = np.arange(len(data))
    try:
        train_idx, test_idx = train_test_split(idx, test_size=test_fraction, random_state=seed, stratify=data.labels)
    except ValueError as err:  # too few images in a class, or fewer test images than classes
        counts = {c: int(n) for c, n in zip(data.classes, np.bincount(data.labels, minlength=len(data.classes)))}
        raise UserError(
            f"cannot hold out a stratified test_fraction={test_fraction} of {len(data)} images "
            f"(per class: {counts}): {err}; add images (at least 2 per class) or change data.test_fraction"
        ) from None
    train_idx.sort(), test_idx.sort()
    return data.take(train_idx), data.take(test_idx)


# The data.* key that sizes each split, for error messages.
_SIZE_KEY = {"pretrain": "data.pretrain_size", "train": "data.train_size", "val": "data.val_size",
             "test": "data.test_size (or data.test_fraction for an ImageFolder without a test folder)"}


def make_splits(train, test, data: DataParams, seed: int, pretrain=None) -> dict:
    """Deterministic for a seed: one permutation of the source's train set. Works on
    labels and sizes only, so image arrays (``ImageSet``) and sample references
    (``SampleRefs``) of the same source give the same splits.

    ``pretrain`` (``data.pretrain_root``): unlabelled images that make the pretrain split
    instead of the labelled pool (a seeded ``data.pretrain_size`` subset of them, in their order).

    Refuses a source with fewer than two classes, an empty split, and a labelled train split
    that misses a class (the evaluations need every class).
    """
    where = f"data.source={data.source} at data.root={data.root}"
    present = np.unique(train.labels)
    if len(present) < 2:
        raise UserError(
            f"{where} needs at least two classes but its train set has {len(present)}; "
            "point data.root at a dataset with two or more classes"
        )
    if data.val_size >= len(train):
        raise UserError(f"data.val_size={data.val_size} leaves no training images (source has {len(train)})")
    order = np.random.default_rng(seed).permutation(len(train))
    val_idx, pool = order[: data.val_size], order[data.val_size :]

    def take(idx: np.ndarray, name: str, size: int | None, n_avail: int) -> np.ndarray:
        if size is not None and size > n_avail:
            raise UserError(f"data.{name}_size={size} exceeds the {n_avail} images available; lower it or set it to null")
        return idx[: size if size is not None else n_avail]

    # take() keeps the source's other fields (classes, skipped files)
    pick = lambda s, i: s.take(i)  # noqa: E731
    # its own stream (seed, 1): the other splits stay what they were before test subsets were random
    test_order = np.arange(len(test)) if data.test_size is None else np.random.default_rng([seed, 1]).permutation(len(test))
    test_idx = np.sort(take(test_order, "test", data.test_size, len(test)))
    if pretrain is None:
        pretrain_split = pick(train, take(pool, "pretrain", data.pretrain_size, len(pool)))
    else:
        drawn = np.random.default_rng([seed, 2]).permutation(len(pretrain))
        pretrain_split = pick(pretrain, np.sort(take(drawn, "pretrain", data.pretrain_size, len(pretrain))))
    splits = {
        "pretrain": pretrain_split,
        "train": pick(train, take(pool, "train", data.train_size, len(pool))),
        "val": pick(train, val_idx),
        "test": pick(test, test_idx),
    }
    for name, split in splits.items():
        if len(split) == 0:
            raise UserError(f"split {name!r} is empty ({where}); change {_SIZE_KEY[name]} or add images to the source")
    absent = [c for i, c in enumerate(train.classes) if i not in present]
    if absent:
        raise UserError(
            f"{where}: the source's train set has no images of class(es) {absent}; "
            "add images of every class or remove the empty classes"
        )
    missing = [c for i, c in enumerate(train.classes) if i not in set(splits["train"].labels.tolist())]
    if missing:
        raise UserError(
            f"the labelled train split has no images of class(es) {missing} "
            f"(data.train_size={data.train_size}, data.val_size={data.val_size} of {len(train)} images); "
            "raise data.train_size (or set it to null) or lower data.val_size"
        )
    return splits
