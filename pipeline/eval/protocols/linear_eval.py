"""Linear evaluation of frozen features: (a) L-BFGS logistic regression, its L2 strength
swept on val and refit on train+val; (b) optionally a linear layer trained by SGD on
augmented images' features (the ImageNet-style protocol; images only: on text shards the
result says why it was skipped)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from pipeline.config import Strict
from pipeline.eval.algorithms.linear import linear_probe
from pipeline.eval.algorithms.linear_sgd import linear_sgd
from pipeline.eval.protocol import EvalContext, Protocol, register


@register
class LinearEval(Protocol):
    name = "linear_eval"
    order = 10

    class Params(Strict):
        """Logistic regression (L-BFGS) on frozen features, L2 strength swept on val."""

        c_grid: list[float] = Field(default_factory=lambda: [0.01, 0.1, 1.0], min_length=1)
        max_iter: int = Field(200, ge=10)
        # (a)'s solver: scikit-learn (float64, CPU) or torch L-BFGS on the device; auto: torch on CUDA, on the CPU
        # scikit-learn up to pipeline.eval.algorithms.linear.SKLEARN_MAX_ELEMENTS train feature values, torch above
        backend: Literal["auto", "sklearn", "torch"] = "auto"
        sweep_size: int = Field(50000, ge=100)  # (a): the C sweep fits a seeded subsample of at most this many train samples
        # protocol (b), ImageNet-style: SGD on features of augmented images; 0 epochs switches it off
        sgd_epochs: int = Field(10, ge=0)
        sgd_batch_size: int = Field(256, ge=2)
        sgd_lr: float = Field(0.1, gt=0)  # per 256 images
        sgd_crop_scale: list[float] = Field(default_factory=lambda: [0.5, 1.0], min_length=2, max_length=2)
        sgd_shuffle_buffer: int = Field(5000, ge=1)  # protocol (b): samples shuffled as they stream from the shards
        amp: bool = True  # protocol (b): bfloat16 autocast on CUDA; ignored on CPU
        nproc_per_node: int = Field(1, ge=1)  # >1: the stage runs under torchrun, protocol (b) with DDP

    def run(self, ctx: EvalContext) -> dict:
        train, val, test = (ctx.features(s) for s in ("train", "val", "test"))
        le = ctx.params.protocol_params[self.name]
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

    def verdict(self, result: dict) -> tuple[str, float] | None:
        return ("linear top-1", result["linear"]["top1"])
