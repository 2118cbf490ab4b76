"""DVC stages `evaluate@<method>-<protocol>` and `baseline@<baseline>-<protocol>`: one
registered evaluation protocol (``pipeline/eval/protocols/``) on a pretrained encoder, or on
a baseline (raw pixels, a random init).

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
from pipeline.data.shards import read_manifest
from pipeline.errors import UserError, exit_on_user_error, output_lock
from pipeline.registry import PROTOCOLS
from pipeline.eval.baselines import baseline_encoder, baseline_featurizer
from pipeline.eval.checks import check_classes
from pipeline.eval.protocol import EvalContext
from pipeline.eval.run import run_protocol
from pipeline.eval.scale import check_scale
from pipeline.modalities.encoders import load_encoder
from pipeline.eval import predictions
from pipeline.outputs import StagedOutputs, write_bytes, write_json
from pipeline.train.loop import pick_device


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
    dist.init_from_env()
    try:
        _evaluate(args, protocol, params, manifest, encoder)
    finally:
        dist.shutdown()


def _evaluate(args, protocol, params, manifest, encoder) -> None:
    if args.baseline:
        name, encoder = args.baseline, baseline_encoder(params, args.baseline, manifest)
        featurizer = baseline_featurizer(params, args.baseline, args.shards)  # None: the encoder's features
    else:
        name, featurizer = Path(args.encoder).parent.name, None
    cache = args.feature_cache or str(Path(args.shards).resolve().parent / "features")
    ctx = EvalContext(name, encoder, args.baseline is None, args.shards, manifest, params, pick_device(), featurizer=featurizer,
                      feature_cache=None if cache == "none" else cache)
    check_scale(protocol.name, params, manifest, feature_dim(ctx, params, manifest), ctx.device, ctx.feature_cache)
    with StagedOutputs() as staged:  # metrics and details appear together, or not at all
        # under DDP every rank runs the protocol (training is split between them); rank 0 writes
        paths = (staged.file(args.metrics), staged.file(args.details)) if dist.is_main() else None
        pred_path = staged.file(args.predictions) if dist.is_main() and args.predictions else None
        reason = protocol.not_applicable(ctx)
        if reason:
            headline, result = {}, {"not_applicable": reason}
        else:
            headline, result = run_protocol(protocol, ctx)
        if paths:
            write_json(paths[0], headline)
            write_json(paths[1], result)
        if pred_path:
            write_bytes(pred_path, predictions.to_bytes(ctx.predictions))
    if dist.is_main():
        print(f"{protocol.name}@{name}: {reason or protocol.summary_line(headline)}")


def feature_dim(ctx: EvalContext, params, manifest: dict) -> int:
    """The width of the context's frozen features, known before any featurizing."""
    if ctx.featurizer is None:
        return ctx.encoder.feature_dim
    return ctx.modality.baseline_dim(manifest, params)  # a features-only baseline's (at most)


if __name__ == "__main__":
    main()
