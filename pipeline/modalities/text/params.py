"""The text modality's own params section, ``text:`` (validated by ``pipeline.config`` through the
modality registry; read with ``text_params(params)``)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from pipeline.config import Strict


class TextParams(Strict):
    """The ``text:`` section (``data.source: fortunes``): tokenizer, entry length, labels,
    text views, the language-ID transfer set and the TF-IDF baseline. Images ignore it."""

    vocab_size: int = Field(4096, ge=64, le=1_000_000)  # BPE vocabulary learned on the pretrain split
    max_length: int = Field(64, ge=4, le=4096)  # tokens per entry incl. [CLS]/[SEP]; longer entries are truncated
    min_class_count: int = Field(200, ge=1)  # categories with fewer entries are merged into "other"
    view_mask_p: float = Field(0.15, ge=0, le=1)  # text views (diagnostics): each real token -> [MASK]
    transfer_per_language: int = Field(1000, ge=10)  # language-ID transfer set: entries per language
    transfer_languages: list[Literal["en", "de", "es", "it"]] = Field(
        default_factory=lambda: ["en", "de", "es", "it"], min_length=2)
    tfidf_max_features: int = Field(10000, ge=1)  # TF-IDF baseline: word 1-2-grams, fitted on the pretrain split


def text_params(params) -> TextParams:
    """The ``text:`` section of validated ``params`` (its defaults when params.yaml has none)."""
    return params.modality_params["text"]
