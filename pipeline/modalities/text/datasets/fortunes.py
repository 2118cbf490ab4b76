"""Data source ``fortunes``: Debian's fortune cookies (``/usr/share/games/fortunes``), labelled by
category file (categories under ``text.min_class_count`` entries merged into "other"); a seeded
stratified ``data.test_fraction`` is held out as the test split (fortunes has none)."""

from __future__ import annotations

from pipeline.modalities.base import register_source
from pipeline.shards.splits import split_stratified
from pipeline.modalities.text.sources import TextSet, fortunes_set
from pipeline.modalities.text.params import text_params


@register_source("fortunes", "text")
def load(params) -> tuple[TextSet, TextSet]:
    """``(train, test)`` entries."""
    entries = fortunes_set(min_count=text_params(params).min_class_count)
    return split_stratified(entries, params.data.test_fraction, params.seed)
