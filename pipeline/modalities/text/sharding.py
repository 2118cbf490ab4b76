"""A source's text entries -> text shards and their tokenizer (``TextModality.write_shards``)."""

from __future__ import annotations

from pipeline.modalities.image.sharding import NOT_IN_MANIFEST
from pipeline.modalities.text.codec import write_text_shards
from pipeline.modalities.text.params import text_params
from pipeline.outputs import StagedOutputs
from pipeline.shards.splits import make_splits

# data.* keys that only concern images, left out of a text manifest.
_IMAGE_ONLY = {"torchvision_name", "download", "image_size", "channels", "store_size", "image_format", "jpeg_quality",
               "streams", "pretrain_root", "store_aspect"}


def manifest_source(d, text) -> dict:
    """The data params a text manifest records, and the text params that change the shards
    (``max_length`` and the tokenizer's actual vocabulary size are the manifest's own keys)."""
    src = d.model_dump(exclude=NOT_IN_MANIFEST | _IMAGE_ONLY)
    src["text"] = {"min_class_count": text.min_class_count, "vocab_size": text.vocab_size}
    return src


def write_shards(params, train, test, out: str) -> dict:
    """``train``/``test`` entries (``TextSet``) -> the four splits' text shards, tokenizer and
    manifest in ``out``, all together or not at all; returns the manifest."""
    d, text = params.data, text_params(params)
    splits = make_splits(train, test, d, params.seed)
    with StagedOutputs() as staged:  # the shard folder appears whole (manifest included) or not at all
        return write_text_shards(splits, staged.dir(out), d.shard_size, source=manifest_source(d, text),
                                 vocab_size=text.vocab_size, max_length=text.max_length)
