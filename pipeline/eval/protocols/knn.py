"""Weighted kNN on frozen features (Wu et al. 2018, as in DINO): each test image votes with
its k nearest train images (cosine similarity, weights exp(sim / temperature))."""

from __future__ import annotations

from pipeline import config
from pipeline.config import KnnParams
from pipeline.eval.checks import check_knn
from pipeline.eval.algorithms.knn import knn_predictions
from pipeline.eval.protocol import EvalContext, Protocol, register


@register
class Knn(Protocol):
    name = "knn"
    Params = KnnParams
    order = 15

    def check(self, params: config.Params, manifest: dict) -> None:
        check_knn(params, manifest)

    def run(self, ctx: EvalContext) -> dict:
        train, test = ctx.features("train"), ctx.features("test")
        knn = ctx.params.knn
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
