"""DVC stage `shard`: source images -> WebDataset shards + manifest.json."""

from __future__ import annotations

import argparse

from pipeline.config import load_params
from pipeline.data import sources
from pipeline.data.shards import write_shards
from pipeline.data.splits import make_splits
from pipeline.errors import exit_on_user_error
from pipeline.outputs import StagedOutputs


@exit_on_user_error
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--out", required=True, help="shard folder, e.g. data/shards")
    args = ap.parse_args()
    params = load_params(args.params)
    d = params.data
    if d.source == "fashion-mnist":
        train, test = sources.fashion_mnist(d.root, d.image_size, d.channels, d.download)
    elif d.source == "imagefolder":
        train, test = sources.image_folder(d.root, d.image_size, d.channels, d.test_fraction, params.seed)
    else:
        train, test = sources.torchvision_dataset(d.torchvision_name, d.root, d.image_size, d.channels, d.download)
    splits = make_splits(train, test, d, params.seed)
    with StagedOutputs() as staged:  # the shard folder appears whole (manifest included) or not at all
        manifest = write_shards(splits, staged.dir(args.out), d.shard_size, source=d.model_dump())
    print("shards:", ", ".join(f"{s} {v['count']}" for s, v in manifest["splits"].items()), "images in", args.out)


if __name__ == "__main__":
    main()
