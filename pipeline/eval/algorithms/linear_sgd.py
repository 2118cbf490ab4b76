"""The ImageNet-style linear protocol: a linear classifier trained by SGD on the frozen
encoder's features of *augmented* images (random resized crop + flip, fresh every epoch),
tested on un-augmented images (Chen et al. 2020 SimCLR; He et al. 2020 MoCo; He et al. 2022
MAE's linear probing: a parameter-free BatchNorm on the features, then the linear layer).

It complements ``pipeline.eval.algorithms.linear`` (L-BFGS on fixed features of un-augmented images):
same question, the recipe the ImageNet papers report. Training goes through the shared loop
(``pipeline.train.loop.fit``); only the head is in the optimizer.
"""

from __future__ import annotations

from typing import Iterable

import torch
import torch.nn.functional as F
from torch import nn

from pipeline import dist
from pipeline.config import OptimParams
from pipeline.modalities.image.views import random_resized_crop, to_float
from pipeline.data.labelled import LabelledSet
from pipeline.train.loop import TrainJob, fit
from pipeline.train.optim import param_groups

CROP_RATIO = (0.75, 1.3333)


def _topk(logits: torch.Tensor, labels: torch.Tensor, k: int) -> float:
    top = logits.topk(k, dim=1).indices
    return float((top == labels[:, None]).any(dim=1).float().mean())


class FrozenLinear(nn.Module):
    """Frozen encoder (always eval mode, no grad) + ``BatchNorm1d(affine=False)`` + linear head.

    ``forward(images uint8 [N,C,H,W], labels [N])`` augments on the batch's device (random
    resized crop with area in ``crop_scale`` + horizontal flip, from a generator seeded with
    ``seed``) and returns ``{'loss', 'acc'}``. The BatchNorm has no parameters: in eval mode it
    is a fixed affine map, so the classifier stays linear in the features (as MAE's probe).
    """

    def __init__(self, encoder: nn.Module, num_classes: int, seed: int, crop_scale: tuple[float, float] = (0.08, 1.0)):
        super().__init__()
        self.encoder = encoder
        dim = encoder.feature_dim
        with torch.random.fork_rng(devices=[]):  # the head's init is fixed by the seed, the global RNG untouched
            torch.manual_seed(seed)
            # momentum=None: running statistics are the plain average over every batch; the
            # encoder is frozen, so the feature distribution is stationary and an exponential
            # average would still carry its initial (0, 1) after a short run.
            bn = nn.BatchNorm1d(dim, affine=False, momentum=None)
            self.head = nn.Sequential(bn, nn.Linear(dim, num_classes))
        self.crop_scale = tuple(crop_scale)
        self.seed = seed
        self.gen: torch.Generator | None = None

    def train(self, mode: bool = True) -> "FrozenLinear":
        super().train(mode)
        self.encoder.eval()  # BatchNorm running statistics of the encoder are never updated
        return self

    def forward(self, images: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        if images.dtype != torch.uint8:  # its training views are image crops
            raise ValueError(f"linear_sgd trains on augmented images: uint8 [N, C, H, W], got {images.dtype}")
        if self.gen is None or self.gen.device != images.device:
            self.gen = torch.Generator(device=images.device)
            self.gen.manual_seed(self.seed + dist.rank())  # each rank its own views (rank 0: as one process)
        x = random_resized_crop(to_float(images), self.crop_scale, CROP_RATIO, 0.5, self.gen)
        with torch.no_grad():
            feats = self.encoder(x).float()
        logits = self.head(feats)
        return {"loss": F.cross_entropy(logits, labels), "acc": (logits.argmax(1) == labels).float().mean()}

    @torch.no_grad()
    def logits(self, images: torch.Tensor, device: torch.device) -> torch.Tensor:
        """Logits ``[N, classes]`` of a batch of un-augmented uint8 images, in eval mode, on the CPU."""
        self.eval()
        return self.head(self.encoder(to_float(images.to(device))).float()).cpu()


def linear_sgd(
    encoder: nn.Module, train: LabelledSet, test: Iterable[tuple[torch.Tensor, torch.Tensor]], num_classes: int,
    epochs: int, batch_size: int, lr: float, seed: int, device: torch.device,
    crop_scale: tuple[float, float] = (0.08, 1.0), amp: bool = True, keep_predictions: bool = False,
) -> dict:
    """Train a linear head on the frozen ``encoder`` and report test accuracy.

    train: uint8 images ``[B, C, H, W]`` with labels (``LabelledSet``: streamed from the shards,
    or in memory); test: batches ``(images uint8 [B, C, H, W], labels [B])``. SGD with
    momentum 0.9 and no weight decay (the papers' probe), ``lr`` per 256 images (scaled
    linearly with the batch size, as every run of the shared loop), cosine decay to 0 over
    ``epochs`` without warmup. ``batch_size`` is capped at the number of training images; the last partial
    batch of each epoch is dropped. The encoder's weights and buffers are left unchanged
    (its ``requires_grad`` flags and train/eval mode are restored; it ends on ``device``).

    Returns ``top1`` (and ``top5`` with more than 5 classes) on ``test``, the last epoch's
    training loss/accuracy (on augmented images), and the settings used; with ``keep_predictions``
    also ``test_predictions``: ``(predicted classes [N], labels [N])`` as tensors.
    """
    if train.count < 2:
        raise ValueError("linear_sgd needs at least 2 training images")
    batch_size = min(batch_size, train.count)
    model = FrozenLinear(encoder, num_classes, seed, crop_scale)  # the head is seeded alike on every rank; views per rank
    optim = OptimParams(epochs=epochs, batch_size=batch_size, optimizer="sgd", lr=lr, momentum=0.9, weight_decay=0.0)
    job = TrainJob(
        module=model, param_groups=param_groups(model.head), optim=optim, amp=amp,
        batches=train.batches_for(batch_size, seed), steps_per_epoch=train.steps(batch_size),
    )
    was_training = encoder.training
    grad_flags = [p.requires_grad for p in encoder.parameters()]
    try:
        for p in encoder.parameters():
            p.requires_grad_(False)
        history = fit(job, device, "linear-sgd")
        logits, labels = zip(*((model.logits(x, device), y.long()) for x, y in test))  # the test split batch by batch
    finally:
        for p, flag in zip(encoder.parameters(), grad_flags):
            p.requires_grad_(flag)
        encoder.train(was_training)
    logits, labels = torch.cat(logits), torch.cat(labels)
    result = {
        "top1": _topk(logits, labels, 1), "train_loss_last_epoch": history[-1]["loss"],
        "train_acc_last_epoch": history[-1]["acc"], "epochs": epochs, "batch_size": batch_size, "lr": lr,
        "crop_scale": list(crop_scale),
    }
    if num_classes > 5:
        result["top5"] = _topk(logits, labels, 5)
    if keep_predictions:
        result["test_predictions"] = (logits.topk(1, dim=1).indices[:, 0], labels)  # as _topk(k=1) ranks them
    return result
