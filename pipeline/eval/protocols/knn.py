"""Weighted kNN on frozen features (Wu et al. 2018, as in DINO): each test image votes with
its k nearest train images (cosine similarity, weights exp(sim / temperature))."""

from __future__ import annotations

from pydantic import Field

from pipeline import config
from pipeline.config import Strict
from pipeline.errors import UserError
from pipeline.eval.algorithms.knn import knn_predictions
from pipeline.eval.protocol import EvalContext, Protocol, register


@register
class Knn(Protocol):
    name = "knn"
    order = 15

    class Params(Strict):
        ks: list[int] = Field(default_factory=lambda: [20, 200], min_length=1)
        temperature: float = Field(0.07, gt=0)  # also the pretrain stage's kNN monitor's

    def check(self, params: config.Params, manifest: dict) -> None:
        """``knn.ks`` against the bank (the train split): kNN-k needs k bank images."""
        bank = int(manifest["splits"]["train"]["count"])
        for k in params.protocol_params[self.name].ks:
            if k < 1:
                raise UserError(f"knn.ks: k={k} is not a number of neighbours; use ks between 1 and {bank}")
            if k > bank:
                raise UserError(
                    f"knn.ks: k={k} is larger than the kNN bank of {bank} train images: kNN would vote over all {bank} "
                    f"but report knn{k}_top1; use ks of at most {bank}, or raise data.train_size"
                )

    def run(self, ctx: EvalContext) -> dict:
        train, test = ctx.features("train"), ctx.features("test")
        knn = ctx.params.protocol_params[self.name]
        predicted = knn_predictions(train[0], train[1], test[0], knn.ks, knn.temperature, ctx.device)  # one search, at the largest k
        out = {}
        for k, labels in predicted.items():
            ctx.record_predictions(f"knn{k}_top1", labels, test[1])
            out[f"knn{k}_top1"] = float((labels == test[1]).mean())
        return out

    def headline(self, result: dict) -> dict:
        return dict(result)

    def summary(self, result: dict) -> dict:
        return {f"kNN-{k[3:-5]} top-1": v for k, v in result.items()}  # "knn20_top1" -> "kNN-20 top-1"

    def verdict(self, result: dict) -> tuple[str, float] | None:
        return ("kNN-20", result["knn20_top1"]) if "knn20_top1" in result else None
