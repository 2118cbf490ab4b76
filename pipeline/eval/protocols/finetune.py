"""Fine-tuning: the encoder and a new linear head trained end to end on every labelled
image (train + val, the labels the linear probe's refit sees too), top-1 on test. On the
random-init baseline the encoder trains at the full learning rate: supervised from scratch."""

from __future__ import annotations

from pipeline import config
from pipeline.errors import UserError
from pipeline.eval.algorithms.finetune import FinetuneParams, top1, train_classifier
from pipeline.eval.protocol import EvalContext, Protocol, register


LABELLED = ("train", "val")  # every label a protocol may fit


@register
class Finetune(Protocol):
    name = "finetune"
    order = 20
    needs_encoder = True

    # the fine-tuning recipe (pipeline/eval/algorithms/finetune.py), which label_efficiency.finetune shares
    Params = FinetuneParams

    def check(self, params: config.Params, manifest: dict) -> None:
        n = sum(int(manifest["splits"][s]["count"]) for s in LABELLED)
        batch_size = params.protocol_params[self.name].batch_size
        if batch_size > n:
            raise UserError(f"finetune.batch_size={batch_size} is larger than the images available: "
                            f"{n} labelled train+val images; lower finetune.batch_size to at most {n}")

    def run(self, ctx: EvalContext) -> dict:
        cfg = ctx.params.protocol_params[self.name]
        data = ctx.training_set(LABELLED, cfg.shuffle_buffer, cfg.length_group)
        mult = cfg.encoder_lr_mult if ctx.pretrained else 1.0  # a random init trains at the full lr
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
