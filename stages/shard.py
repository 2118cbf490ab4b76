"""DVC stage `shard`: source images -> WebDataset shards + manifest.json (`text-shard`,
``data.source: fortunes``: text entries -> text shards + their tokenizer, ``pipeline/modalities/text/shards.py``).

Streaming: the source gives sample references (file paths, indices) and labels, the splits
are computed from the labels, and worker processes (``data.workers``) load, resize and
encode the images a chunk at a time, so memory does not grow with the dataset. The output
is byte-identical for any number of workers, and resumes: a killed run leaves ``<out>.tmp``
with the shards it finished, which the next run keeps (``write_resumable``).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path

from pipeline import dist
from pipeline.config import load_params
from pipeline.modalities.image import sources
from pipeline.modalities.text import sources as text
from pipeline.data.shards import SampleFormat, write_shards
from pipeline.shards.splits import make_splits
from pipeline.modalities.text.shards import write_text_shards
from pipeline.modalities.image.fidelity import information_loss
from pipeline.errors import exit_on_user_error, naming, output_lock
from pipeline.outputs import TMP_SUFFIX, StagedOutputs
from pipeline.modalities.text.params import text_params

# data.* keys that do not change the output (left out of the manifest), and new keys left out
# at their defaults, so a manifest is byte-identical to one written before they existed.
_NOT_IN_MANIFEST = {"workers", "max_image_pixels"}
_OMITTED_AT_DEFAULT = {"store_size": None, "image_format": "png", "streams": 1, "pretrain_root": None, "store_aspect": False}
# data.* keys that only concern images, left out of a text manifest.
_IMAGE_ONLY = {"torchvision_name", "download", "image_size", "channels", "store_size", "image_format", "jpeg_quality",
               "streams", "pretrain_root", "store_aspect"}


def manifest_source(d) -> dict:
    """The data params as the manifest records them."""
    src = d.model_dump(exclude=_NOT_IN_MANIFEST)
    for key, default in _OMITTED_AT_DEFAULT.items():
        if src[key] == default:
            del src[key]
    if src.get("image_format", "png") == "png":
        del src["jpeg_quality"]  # unused with png
    return src


def text_manifest_source(d, text) -> dict:
    """The data params a text manifest records, and the text params that change the shards
    (``max_length`` and the tokenizer's actual vocabulary size are the manifest's own keys)."""
    src = d.model_dump(exclude=_NOT_IN_MANIFEST | _IMAGE_ONLY)
    src["text"] = {"min_class_count": text.min_class_count, "vocab_size": text.vocab_size}
    return src


def write_text(params, out: str) -> dict:
    """The fortunes' categories as text shards: a stratified ``data.test_fraction`` held out as
    the test split (fortunes has none), the rest split as images are (``make_splits``)."""
    d = params.data
    entries = text.fortunes_set(min_count=text_params(params).min_class_count)
    train, test = sources.split_stratified(entries, d.test_fraction, params.seed)
    splits = make_splits(train, test, d, params.seed)
    with StagedOutputs() as staged:  # the shard folder appears whole (manifest included) or not at all
        return write_text_shards(splits, staged.dir(out), d.shard_size, source=text_manifest_source(d, text_params(params)),
                                 vocab_size=text_params(params).vocab_size, max_length=text_params(params).max_length)


def write_resumable(out: str, write) -> dict:
    """``write(folder)`` into ``<out>.tmp``, then renamed to ``out``: the shard folder appears
    whole (manifest included) or not at all. Unlike ``StagedOutputs`` the staging folder
    outlives a killed run (SIGKILL, out of memory, a pre-empted host, a power cut): the next
    run keeps the shards it finished (``shards.Journal``: same inputs, same bytes) and writes
    the rest. An error or Ctrl-C removes it, as ``StagedOutputs`` does."""
    final = Path(out)
    tmp = final.with_name(final.name + TMP_SUFFIX)
    final.parent.mkdir(parents=True, exist_ok=True)
    try:
        manifest = write(tmp)
    except BaseException:  # an error or Ctrl-C: nothing half-written (only a killed process leaves shards to resume)
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if final.is_dir():
        shutil.rmtree(final)
    elif final.exists():
        final.unlink()
    os.replace(tmp, final)
    return manifest


@exit_on_user_error
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--preset", default=None, help="presets/<name>.yaml merged over the params, e.g. text")
    ap.add_argument("--out", required=True, help="shard folder, e.g. data/shards")
    args = ap.parse_args()
    params = load_params(args.params, preset=args.preset)
    # one run at a time per shard folder; a full disk names the folder (a tar writer's error names no file)
    with output_lock(args.out), naming(args.out):
        _shard(params, args.out)


def _shard(params, out: str) -> None:
    d = params.data
    if d.source == "fortunes":
        manifest = write_text(params, out)
        print("shards:", ", ".join(f"{s} {v['count']}" for s, v in manifest["splits"].items()),
              f"entries and a {manifest['vocab_size']}-token tokenizer in", out)
        return
    if d.source == "fashion-mnist":
        train, test = sources.fashion_mnist_refs(d.root, d.download)
    elif d.source == "imagefolder":
        train, test = sources.image_folder_refs(d.root, d.test_fraction, params.seed)
        sources.limit_pixels((train, test), d.max_image_pixels)
    else:
        train, test = sources.torchvision_refs(d.torchvision_name, d.root, d.download)
    pretrain = sources.image_tree_refs(d.pretrain_root, train.classes) if d.pretrain_root else None
    # a look at the images that make most of the shards: the unlabelled tree when there is one
    for warning in information_loss(train if pretrain is None else pretrain, d.image_size, d.channels, d.store_size):
        print(f"warning: {warning}", file=sys.stderr)
    if pretrain is not None:
        sources.limit_pixels((pretrain,), d.max_image_pixels)
    splits = make_splits(train, test, d, params.seed, pretrain)
    fmt = SampleFormat(d.image_size, d.channels, d.store_size, d.image_format, d.jpeg_quality, d.store_aspect)
    manifest = write_resumable(out, lambda tmp: write_shards(
        splits, tmp, d.shard_size, source=manifest_source(d), fmt=fmt, workers=dist.default_workers(d.workers),
        n_streams=d.streams, resume=True))
    print("shards:", ", ".join(f"{s} {v['count']}" for s, v in manifest["splits"].items()), "images in", out)


if __name__ == "__main__":
    main()
