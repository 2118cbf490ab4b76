"""One evaluation, as the ``evaluate@<method>-<protocol>`` and ``baseline@<baseline>-<protocol>``
stages run it: a registered protocol on a pretrained encoder or a baseline, its size checked
before any work (``scale.check_scale``), and its headline metrics, details and per-example
predictions written together (``StagedOutputs``), by rank 0 only (under DDP every rank runs
the protocol: training is split between them)."""

from __future__ import annotations

from dataclasses import dataclass

from pipeline import dist
from pipeline.config import Params
from pipeline.eval import predictions
from pipeline.eval.baselines import baseline_encoder, baseline_featurizer
from pipeline.eval.protocol import EvalContext, Protocol
from pipeline.eval.run import run_protocol
from pipeline.eval.scale import check_scale
from torch import nn
from pipeline.outputs import StagedOutputs, write_bytes, write_json
from pipeline.train.device import pick_device


@dataclass(frozen=True)
class EvalOutputs:
    metrics: str  # headline numbers (a DVC metrics file)
    details: str  # every number and setting (a plain output DVC does not diff)
    predictions: str | None = None  # per-example test predictions (the review's significance tests); None: not written


def evaluate(protocol: Protocol, params: Params, manifest: dict, shards: str, name: str, encoder: nn.Module | None,
             baseline: str | None, outputs: EvalOutputs, feature_cache: str | None) -> None:
    """Run ``protocol`` on ``encoder`` (a pretrained one, named ``name``) or on ``baseline``
    (``encoder`` None: it is built here), write ``outputs`` and print the summary line.
    ``feature_cache``: the folder of the split features shared by the stages (None: in memory)."""
    if baseline:
        encoder = baseline_encoder(params, baseline, manifest)
        featurizer = baseline_featurizer(params, baseline, shards)  # None: the encoder's features
    else:
        featurizer = None
    ctx = EvalContext(name, encoder, baseline is None, shards, manifest, params, pick_device(), featurizer=featurizer,
                      feature_cache=feature_cache)
    check_scale(protocol.name, params, manifest, feature_dim(ctx, params, manifest), ctx.device, ctx.feature_cache)
    with StagedOutputs() as staged:  # metrics and details appear together, or not at all
        # under DDP every rank runs the protocol (training is split between them); rank 0 writes
        paths = (staged.file(outputs.metrics), staged.file(outputs.details)) if dist.is_main() else None
        pred_path = staged.file(outputs.predictions) if dist.is_main() and outputs.predictions else None
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


def feature_dim(ctx: EvalContext, params: Params, manifest: dict) -> int:
    """The width of the context's frozen features, known before any featurizing."""
    if ctx.featurizer is None:
        return ctx.encoder.feature_dim
    return ctx.modality.baseline_dim(manifest, params)  # a features-only baseline's (at most)
