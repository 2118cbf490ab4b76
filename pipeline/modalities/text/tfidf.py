"""The TF-IDF baseline for text: word 1-2-gram TF-IDF features (sublinear tf), the features-only
baseline that text encoders must beat, as raw pixels are for images.

The vectorizer is fitted on the pretrain split only (the texts the encoders pretrained on, no
labels). It sees exactly what the encoders see: the packed entries decoded back to text with
the shard folder's tokenizer, so truncation to ``max_length`` tokens applies to both. Fitting
on the decoded packed pretrain split rather than its raw texts (``text.codec.read_texts``) keeps
that true for the vocabulary and IDF weights too, and needs no second reader.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from sklearn.feature_extraction.text import TfidfVectorizer
from tokenizers import Tokenizer

from pipeline.shards.read import load_split
from pipeline.modalities.text.tokenizer import load_tokenizer
from pipeline.modalities.base import Featurizer


def decode_packed(tok: Tokenizer, x: torch.Tensor) -> list[str]:
    """Packed int64 ``[N, 2, L]`` -> N strings: each row's real tokens (attention 1) decoded,
    special tokens ([CLS], [SEP], [PAD], ...) dropped."""
    ids, att = x[:, 0].cpu(), x[:, 1].cpu().bool()
    return tok.decode_batch([row[keep].tolist() for row, keep in zip(ids, att)], skip_special_tokens=True)


class TfidfFeaturizer:
    """``featurize(x) -> float32 [N, F]``, F <= ``max_features``: TF-IDF (word 1-2-grams,
    sublinear tf, L2-normalised rows) of packed int64 ``x [N, 2, L]`` (decoded with ``tok``) or
    of a list of N strings. The vocabulary and IDF come from ``fit_texts`` alone."""

    def __init__(self, fit_texts: Sequence[str], max_features: int, tok: Tokenizer | None = None):
        self.tok = tok
        self.vectorizer = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, max_features=max_features,
                                          dtype=np.float32)
        self.vectorizer.fit(list(fit_texts))

    @property
    def feature_dim(self) -> int:
        return len(self.vectorizer.vocabulary_)

    def texts(self, x: torch.Tensor | Sequence[str]) -> list[str]:
        if isinstance(x, torch.Tensor):
            if self.tok is None:
                raise ValueError("packed entries need the tokenizer to decode them; pass tok")
            return decode_packed(self.tok, x)
        return list(x)

    def __call__(self, x: torch.Tensor | Sequence[str]) -> np.ndarray:
        # dense: every protocol takes [N, D] arrays (F is capped by text.tfidf_max_features)
        return self.vectorizer.transform(self.texts(x)).toarray()


def tfidf_featurizer(shards: str | Path, max_features: int) -> Featurizer:
    """The TF-IDF baseline of a text shard folder: fitted on its pretrain split (decoded with its
    tokenizer) on first use, so a protocol that does not apply to it fits nothing."""
    fitted: list[TfidfFeaturizer] = []

    def featurize(x: torch.Tensor | Sequence[str]) -> np.ndarray:
        if not fitted:
            tok = load_tokenizer(shards)
            pretrain, _ = load_split(shards, "pretrain")
            fitted.append(TfidfFeaturizer(decode_packed(tok, pretrain), max_features, tok))
        return fitted[0](x)

    return featurize
