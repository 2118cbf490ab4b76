"""DVC stage `shard` (and `text-shard`, ``--preset text``): a data source's samples -> WebDataset
shards + manifest.json in ``--out``.

The source (``data.source``, registered in ``pipeline/modalities/<modality>/datasets/``) gives
its labelled train and test samples; its modality writes the four splits' shards
(``Modality.write_shards``: images streamed and encoded by worker processes, resumable after
a kill; text with its tokenizer). The output is byte-identical for the same params and data.
"""

from __future__ import annotations

import argparse

from pipeline.config import load_params
from pipeline.errors import exit_on_user_error, naming, output_lock
from pipeline.registry import MODALITIES, SOURCES


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
        source = SOURCES.get(params.data.source)
        modality = MODALITIES.get(source.modality)
        train, test = source.load(params)
        manifest = modality.write_shards(params, train, test, args.out)
        print(modality.shard_summary(manifest, args.out))


if __name__ == "__main__":
    main()
