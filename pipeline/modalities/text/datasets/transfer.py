"""Text transfer sets (``transfer.datasets``): ``fortunes-language``, language identification over
Debian's English/German/Spanish/Italian fortunes, a balanced seeded sample split train/val/test
as the image sets, encoded with the shard folder's own tokenizer and ``max_length``."""

from __future__ import annotations

from collections import Counter

import numpy as np
import torch

from pipeline.errors import UserError
from pipeline.modalities.base import TransferSet
from pipeline.shards.splits import split_stratified
from pipeline.modalities.text.sources import TextSet, fortunes_by_language
from pipeline.modalities.text.tokenizer import encode_packed, load_tokenizer
from pipeline.registry import TRANSFER_SETS
from pipeline.modalities.text.params import text_params


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


def load_text_transfer(languages: list[str], per_language: int, test_fraction: float, val_fraction: float,
                       seed: int) -> dict[str, TextSet]:
    """``{'train', 'val', 'test'}``: ``per_language`` fortunes of each of ``languages``, labelled by
    language (Debian's fortunes, fortunes-de, -es, -it), stratified and seeded as the image sets."""
    data = language_sample(*fortunes_by_language(tuple(languages)), per_language, seed)
    train, test = split_stratified(data, test_fraction, seed)
    train, val = split_stratified(train, val_fraction, seed)  # val picks the probe's L2 strength
    return {"train": train, "val": val, "test": test}


def _fortunes_language(tp, params, shards: str, manifest: dict, seed: int) -> dict[str, tuple[torch.Tensor, np.ndarray]]:
    tx = text_params(params)
    sets = load_text_transfer(tx.transfer_languages, tx.transfer_per_language, tp.test_fraction, tp.val_fraction, seed)
    tok = load_tokenizer(shards)
    return {s: (encode_packed(tok, list(d.texts), manifest["max_length"]), d.labels) for s, d in sets.items()}


TRANSFER_SETS.register(TransferSet("fortunes-language", "text", _fortunes_language), "fortunes-language")
