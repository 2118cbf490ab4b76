"""Fine-tuning: the encoder and a new linear head trained end to end on every labelled
image (train + val, the labels the linear probe's refit sees too), top-1 on test. On the
random-init baseline the encoder trains at the full learning rate: supervised from scratch."""

from __future__ import annotations

from pipeline import config
from pipeline.config import FinetuneParams
from pipeline.data.labelled import LabelledSet
from pipeline.errors import UserError
from pipeline.eval.algorithms.finetune import top1, train_classifier
from pipeline.eval.protocol import EvalContext, Protocol, register


LABELLED = ("train", "val")  # every label a protocol may fit


def labelled_set(ctx: EvalContext, cfg: FinetuneParams, keep: dict | None = None) -> LabelledSet:
    """The train + val samples (or their ``keep`` indices) as ``cfg``'s fine-tuning trains on them."""
    return ctx.training_set(LABELLED, cfg.shuffle_buffer, cfg.length_group, keep)


def encoder_lr_mult(ctx: EvalContext) -> float:
    """The SSL encoder trains at ``finetune.encoder_lr_mult`` times the lr; a random init at the full lr."""
    return ctx.params.finetune.encoder_lr_mult if ctx.pretrained else 1.0


@register
class Finetune(Protocol):
    name = "finetune"
    Params = FinetuneParams
    order = 20
    needs_encoder = True

    def check(self, params: config.Params, manifest: dict) -> None:
        n = sum(int(manifest["splits"][s]["count"]) for s in LABELLED)
        if params.finetune.batch_size > n:
            raise UserError(f"finetune.batch_size={params.finetune.batch_size} is larger than the images available: "
                            f"{n} labelled train+val images; lower finetune.batch_size to at most {n}")

    def run(self, ctx: EvalContext) -> dict:
        cfg = ctx.params.finetune
        data = labelled_set(ctx, cfg)
        mult = encoder_lr_mult(ctx)
        model, history = train_classifier(ctx.trainable_encoder(), data, ctx.num_classes, cfg, mult, ctx.seed,
                                          ctx.device, f"finetune {ctx.name}")
        kept: list = []
        acc = top1(model, ctx.batches("test"), ctx.device, keep=kept)
        ctx.record_predictions("top1", *kept[0])
        return {"top1": acc, "n_labels": data.count, "epochs": cfg.epochs,
                "encoder_lr_mult": mult, "train_loss_last_epoch": history[-1]["loss"], "train_acc_last_epoch": history[-1]["acc"]}

    def headline(self, result: dict) -> dict:
        return {"top1": result["top1"]}

    def summary(self, result: dict) -> dict:
        return {"finetune top-1": result["top1"]}
