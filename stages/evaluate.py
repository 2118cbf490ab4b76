"""DVC stages `evaluate@<method>-<protocol>` and `baseline@<baseline>-<protocol>`: one
registered evaluation protocol (``pipeline/eval/protocols/``) on a pretrained encoder, or on
a baseline (raw pixels, a random init); ``pipeline.eval.evaluate`` runs it.

    python stages/evaluate.py linear_eval --encoder models/simclr/encoder.pt --shards data/shards \\
        --metrics metrics/linear_eval/simclr.json --details metrics/linear_eval/simclr.details.json \\
        --predictions metrics/linear_eval/simclr.predictions.json
    python stages/evaluate.py linear_eval --baseline random_init --shards data/shards ...
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pipeline import dist
from pipeline.config import load_params
from pipeline.shards.manifest import read_manifest
from pipeline.errors import UserError, exit_on_user_error, output_lock
from pipeline.eval.checks import check_classes
from pipeline.eval.evaluate import EvalOutputs, evaluate
from pipeline.modalities.encoders import load_encoder
from pipeline.registry import PROTOCOLS


@exit_on_user_error
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("protocol", help="a registered protocol (its params section), e.g. linear_eval")
    source = ap.add_mutually_exclusive_group(required=True)
    source.add_argument("--encoder", help="a pretrained encoder (models/<method>/encoder.pt)")
    source.add_argument("--baseline", help="raw_pixels, random_init or random_init_<method>")
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--preset", help="a preset merged over --params, e.g. text (presets/<name>.yaml)")
    ap.add_argument("--shards", required=True)
    ap.add_argument("--metrics", required=True, help="headline numbers (a DVC metrics file)")
    ap.add_argument("--details", required=True, help="every number and setting (a plain output DVC does not diff)")
    ap.add_argument("--feature-cache", help="folder of the split features shared by the stages (pipeline/eval/feature_cache.py); "
                    "default: 'features' beside the shards folder; 'none': keep them in memory")
    ap.add_argument("--predictions", help="per-example test predictions for the review's significance tests "
                                          "(pipeline/eval/predictions.py); not written when omitted")
    args = ap.parse_args()
    protocol = PROTOCOLS.get(args.protocol)
    params = load_params(args.params, args.preset)
    manifest = read_manifest(args.shards)
    check_classes(manifest)
    protocol.check(params, manifest)  # before any featurizing or training
    if args.baseline and args.baseline not in params.baselines:
        raise UserError(f"--baseline {args.baseline!r} is not in params.yaml baselines {params.baselines}")
    if args.encoder and not Path(args.encoder).is_file():
        raise UserError(f"{args.encoder} not found; run 'dvc repro' (pretraining writes it)")
    # a crafted file, or an encoder of other shards, is refused before any work
    encoder = load_encoder(args.encoder, manifest, args.shards) if args.encoder else None
    with output_lock(args.metrics):
        _run(args, protocol, params, manifest, encoder)


def _run(args, protocol, params, manifest, encoder) -> None:
    nproc = getattr(params.protocol_params[protocol.name], "nproc_per_node", 1)
    if nproc > 1 and not dist.launched_by_torchrun():  # bad params and data were refused above, once
        sys.exit(dist.relaunch_under_torchrun(nproc, __file__, protocol.name))
    cache = args.feature_cache or str(Path(args.shards).resolve().parent / "features")
    name = args.baseline or Path(args.encoder).parent.name
    outputs = EvalOutputs(args.metrics, args.details, args.predictions)
    dist.init_from_env()
    try:
        evaluate(protocol, params, manifest, args.shards, name, encoder, args.baseline, outputs,
                 feature_cache=None if cache == "none" else cache)
    finally:
        dist.shutdown()


if __name__ == "__main__":
    main()
