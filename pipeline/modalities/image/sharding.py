"""A source's images -> image shards (``ImageModality.write_shards``).

Streaming: the source gives sample references (file paths, indices) and labels, the splits
are computed from the labels, and worker processes (``data.workers``) load, resize and
encode the images a chunk at a time, so memory does not grow with the dataset. The output
is byte-identical for any number of workers, and resumes: a killed run leaves ``<out>.tmp``
with the shards it finished, which the next run keeps (``pipeline.outputs.write_resumable``).
"""

from __future__ import annotations

import sys

from pipeline import dist
from pipeline.modalities.image.codec import SampleFormat, write_image_shards
from pipeline.modalities.image.datasets.imagefolder import image_tree_refs
from pipeline.modalities.image.fidelity import information_loss
from pipeline.modalities.image.sources import limit_pixels
from pipeline.outputs import write_resumable
from pipeline.shards.splits import make_splits

# data.* keys that do not change the output (left out of the manifest), and new keys left out
# at their defaults, so a manifest is byte-identical to one written before they existed.
NOT_IN_MANIFEST = {"workers", "max_image_pixels"}
_OMITTED_AT_DEFAULT = {"store_size": None, "image_format": "png", "streams": 1, "pretrain_root": None, "store_aspect": False}


def manifest_source(d) -> dict:
    """The data params (``DataParams``) as an image manifest records them."""
    src = d.model_dump(exclude=NOT_IN_MANIFEST)
    for key, default in _OMITTED_AT_DEFAULT.items():
        if src[key] == default:
            del src[key]
    if src.get("image_format", "png") == "png":
        del src["jpeg_quality"]  # unused with png
    return src


def write_shards(params, train, test, out: str) -> dict:
    """``train``/``test`` references of the source (plus ``data.pretrain_root``'s unlabelled
    images, if set) -> the four splits' shards and manifest in ``out``; returns the manifest."""
    d = params.data
    pretrain = image_tree_refs(d.pretrain_root, train.classes) if d.pretrain_root else None
    # a look at the images that make most of the shards: the unlabelled tree when there is one
    for warning in information_loss(train if pretrain is None else pretrain, d.image_size, d.channels, d.store_size):
        print(f"warning: {warning}", file=sys.stderr)
    if pretrain is not None:
        limit_pixels((pretrain,), d.max_image_pixels)
    splits = make_splits(train, test, d, params.seed, pretrain)
    fmt = SampleFormat(d.image_size, d.channels, d.store_size, d.image_format, d.jpeg_quality, d.store_aspect)
    return write_resumable(out, lambda tmp: write_image_shards(
        splits, tmp, d.shard_size, source=manifest_source(d), fmt=fmt, workers=dist.default_workers(d.workers),
        n_streams=d.streams, resume=True))
