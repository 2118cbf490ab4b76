"""Params checked against the shards' manifest before an evaluation featurizes or trains.

``pipeline.config`` validates each key on its own; whether a value fits the data (k
neighbours in a bank of N images, K shots in the smallest test class, a label fraction
that leaves every class at least one image) is only known from the manifest. Without
these checks such values fail deep in a protocol after minutes of work, or worse, are
silently adjusted while the result still names the requested value.

Each check raises ``UserError`` naming the key, the value, what the data allows and the fix.
"""

from __future__ import annotations

import math

from pipeline.config import Params
from pipeline.errors import UserError

LABELLED = ("train", "val", "test")


def _per_class(manifest: dict, split: str) -> dict[str, int]:
    """Classes of ``split`` that hold at least one image -> their count."""
    per_class = manifest["splits"].get(split, {}).get("per_class") or {}
    return {c: int(n) for c, n in per_class.items() if n > 0}


def check_classes(manifest: dict) -> None:
    """Every labelled split needs 2 classes: with one there is nothing to classify (and the
    probe's logistic regression refuses to fit)."""
    for split in LABELLED:
        present = _per_class(manifest, split)
        if len(present) < 2:
            raise UserError(
                f"the {split} split holds {len(present)} class(es) {sorted(present)}: the linear probe needs at least "
                "2 classes (so do kNN, few-shot and fine-tuning); use a dataset with 2 or more labelled classes "
                "(data.source / data.root) and re-run the shard stage"
            )


def check_knn(params: Params, manifest: dict) -> None:
    """``knn.ks`` against the bank (the train split): kNN-k needs k bank images."""
    bank = int(manifest["splits"]["train"]["count"])
    for k in params.knn.ks:
        if k < 1:
            raise UserError(f"knn.ks: k={k} is not a number of neighbours; use ks between 1 and {bank}")
        if k > bank:
            raise UserError(
                f"knn.ks: k={k} is larger than the kNN bank of {bank} train images: kNN would vote over all {bank} "
                f"but report knn{k}_top1; use ks of at most {bank}, or raise data.train_size"
            )


def check_few_shot(params: Params, manifest: dict) -> None:
    """``few_shot.ways`` against the test split's classes, ``shots + queries`` against its smallest class."""
    fs = params.few_shot
    present = _per_class(manifest, "test")
    n_classes = len(present)
    for ways in fs.ways:
        if ways == "all":
            continue
        if ways < 2:
            raise UserError(f"few_shot.ways: {ways} is not a number of ways; use integers >= 2 or 'all'")
        if ways > n_classes:
            raise UserError(
                f"few_shot.ways: {ways}-way episodes need {ways} classes, but the test split has {n_classes}; "
                f"use ways of at most {n_classes} (or 'all')"
            )
    if not present:
        return  # check_classes reports it
    smallest_class, smallest = min(present.items(), key=lambda item: item[1])
    if fs.queries > smallest - 1:
        raise UserError(
            f"few_shot.queries: {fs.queries} queries plus at least 1 shot need {fs.queries + 1} test images per class, "
            f"but the smallest test class ('{smallest_class}') has {smallest}; lower few_shot.queries to at most "
            f"{smallest - 1} or use more test images (data.test_size / data.test_fraction)"
        )
    for k in fs.shots:
        if k < 1 or k + fs.queries > smallest:
            raise UserError(
                f"few_shot.shots: {k}-shot episodes with few_shot.queries={fs.queries} need {k + fs.queries} test images "
                f"per class, but the smallest test class ('{smallest_class}') has {smallest}; use shots between 1 and "
                f"{smallest - fs.queries}, lower few_shot.queries, or use more test images (data.test_size / data.test_fraction)"
            )


def _rounds_to_zero(fraction: float, count: int) -> bool:
    """``pipeline.eval.algorithms.label_fractions.per_class_count`` before its floor of 1 image."""
    return math.floor(fraction * count + 0.5) < 1


def smallest_fraction(count: int) -> float:
    """The smallest fraction, rounded up to 2 significant digits, that keeps 1 of ``count``
    images (``per_class_count`` rounds halves up): about 0.5 / count."""
    exact = 0.5 / count
    digits = 1 - math.floor(math.log10(exact))
    fraction = math.ceil(exact * 10**digits) / 10**digits
    while _rounds_to_zero(fraction, count):  # float rounding of the division, just in case
        fraction += 10**-digits
    return min(fraction, 1.0)


def check_label_efficiency(params: Params, manifest: dict) -> None:
    """Each fraction must give every class of train and val at least 1 image by rounding;
    below that every class is raised to 1 image and the result would name a fraction
    that was not used (SimCLR-style "1% labels" must mean 1%)."""
    # The smallest class of train and val binds: a fraction that keeps it keeps every class.
    classes = [(n, split, c) for split in ("train", "val") for c, n in _per_class(manifest, split).items()]
    if not classes:
        return  # check_classes reports it
    smallest, split, name = min(classes)
    for fraction in params.label_efficiency.fractions:
        if _rounds_to_zero(fraction, smallest):
            raise UserError(
                f"label_efficiency.fractions: {fraction:g} of the smallest {split} class ('{name}', {smallest} images) "
                f"rounds to 0 images, so every class would get 1 image and the result would not be at {fraction:g}; "
                f"use fractions of at least {smallest_fraction(smallest):g}, or more {split} images (data.{split}_size)"
            )


def check_protocol_params(protocol: str, params: Params, manifest: dict) -> None:
    """Refuse params that do not fit the shards for a registered ``protocol``, before any
    featurizing or training: the classes every protocol needs, then the protocol's own checks."""
    from pipeline.registry import PROTOCOLS

    check_classes(manifest)
    PROTOCOLS.get(protocol).check(params, manifest)
