"""Linear evaluation of frozen features: (a) L-BFGS logistic regression, its L2 strength
swept on val and refit on train+val; (b) optionally a linear layer trained by SGD on
augmented images' features (the ImageNet-style protocol; images only: on text shards the
result says why it was skipped)."""

from __future__ import annotations

from pipeline.config import LinearParams
from pipeline.eval.algorithms.linear import linear_probe
from pipeline.eval.algorithms.linear_sgd import linear_sgd
from pipeline.eval.protocol import EvalContext, Protocol, register


@register
class LinearEval(Protocol):
    name = "linear_eval"
    Params = LinearParams
    order = 10

    def run(self, ctx: EvalContext) -> dict:
        train, val, test = (ctx.features(s) for s in ("train", "val", "test"))
        le = ctx.params.linear_eval
        out = {"linear": linear_probe(train, val, test, le.c_grid, le.max_iter, le.backend, le.sweep_size, ctx.seed, ctx.device,
                                      keep_predictions=True)}
        ctx.record_predictions("linear_top1", out["linear"].pop("test_predictions"), test[1])
        if le.sgd_epochs and ctx.encoder is not None and not ctx.modality.random_crops:
            out["linear_sgd_not_applicable"] = ("linear_sgd trains on the encoder's features of augmented images "
                                                f"(random resized crops); {ctx.modality.content} has no such views: "
                                                "set linear_eval.sgd_epochs: 0")
        elif le.sgd_epochs and ctx.encoder is not None:  # trains on the encoder's features of augmented images
            out["linear_sgd"] = linear_sgd(ctx.encoder, ctx.training_set(("train",), le.sgd_shuffle_buffer), ctx.batches("test"),
                                           ctx.num_classes, le.sgd_epochs, le.sgd_batch_size, le.sgd_lr, ctx.seed, ctx.device,
                                           crop_scale=tuple(le.sgd_crop_scale), amp=le.amp, keep_predictions=True)
            ctx.record_predictions("linear_sgd_top1", *out["linear_sgd"].pop("test_predictions"))
        return out

    def headline(self, result: dict) -> dict:
        out = {"linear_top1": result["linear"]["top1"]}
        if "linear_sgd" in result:
            out["linear_sgd_top1"] = result["linear_sgd"]["top1"]
        return out

    def summary(self, result: dict) -> dict:
        row = {"linear top-1": result["linear"]["top1"]}
        if "linear_sgd" in result:
            row["linear SGD top-1"] = result["linear_sgd"]["top1"]
        return row
